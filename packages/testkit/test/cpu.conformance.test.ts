import { cpuBackend } from '@natten-web/cpu';
import { defineNaConformance, defineNaProperties } from '../src/index.ts';

// The CPU reference backend against the dense f64 oracle: the whole quick grid in f64, f32 and f16
// (f16 inputs are rounded first, so the oracle sees exactly the values the backend sees).
defineNaConformance({
  name: 'cpu',
  makeBackend: async () => cpuBackend,
  dtypes: ['float64', 'float32', 'float16'],
  size: 'quick',
  reference: 'oracle',
});

defineNaProperties({ name: 'cpu', makeBackend: async () => cpuBackend, dtype: 'float64' });
defineNaProperties({ name: 'cpu', makeBackend: async () => cpuBackend, dtype: 'float16', numRuns: 20 });
