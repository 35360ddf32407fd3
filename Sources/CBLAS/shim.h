// C shim over OpenBLAS's cblas.h (Debian: libopenblas-dev). No logic lives here.
#ifndef SWIFTMIND_CBLAS_SHIM_H
#define SWIFTMIND_CBLAS_SHIM_H
#include <cblas.h>
// Declared by OpenBLAS in cblas.h on most builds; repeated here for builds that omit them.
char *openblas_get_corename(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
#endif
