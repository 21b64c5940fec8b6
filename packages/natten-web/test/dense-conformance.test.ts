/** The dense conformance suite (@natten-web/testkit) on the umbrella's host path, float32 and float16. */
import { defineDenseConformance } from '@natten-web/testkit';
import { hostDenseBackend } from './dense-backends.ts';

defineDenseConformance({ name: 'natten-web host (f64 math)', makeBackend: async () => hostDenseBackend, dtypes: ['float32', 'float16'] });
