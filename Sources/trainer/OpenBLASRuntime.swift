// Placeholder — the Model helper implements: re-exec with OPENBLAS_CORETYPE set for this CPU when unset.
enum OpenBLASRuntime { static func ensureFastKernel() {} }
