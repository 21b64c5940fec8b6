// wgsl_reflect 1.6's `main` is a CommonJS file inside a `"type": "module"` package, so Node cannot
// load it; its ES module build has no types of its own. Point the module build at the package types.
declare module 'wgsl_reflect/wgsl_reflect.module.js' {
  export { WgslReflect } from 'wgsl_reflect';
}
