/* Prints the GPU's device-to-device copy bandwidth as JSON: the memory
 * roofline that the decode benchmarks are held to. */
#include <stdio.h>

#include "alm.h"
#include "cuda/cuda_backend.h"

int main(void)
{
    alm_error err = { 0 };
    double gbs = 0.0;
    size_t bytes = (size_t)1 << 30;
    if (cuda_copy_bandwidth(bytes, 5, &gbs, &err) < 0) {
        fprintf(stderr, "cuda-copy-bandwidth: %s\n", err.message);
        return 1;
    }
    printf("{\"copy_bytes\": %zu, \"read_plus_write_gb_per_s\": %.1f, \"copy_gb_per_s\": %.1f}\n",
           bytes, gbs, gbs / 2.0);
    return 0;
}
