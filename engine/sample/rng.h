/* The sampler's pseudo-random numbers: xoshiro256** (Blackman and Vigna),
 * seeded through splitmix64 so that any 64-bit seed, 0 included, gives a
 * well-mixed state. Small, fast, and reproducible across machines: the same
 * seed gives the same stream everywhere. Not for cryptography. */
#ifndef ALM_SAMPLE_RNG_H
#define ALM_SAMPLE_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t state[4];
} rng;

void rng_seed(rng *r, uint64_t seed);

/* The next 64 uniformly distributed bits. */
uint64_t rng_next(rng *r);

/* Uniform in [0, 1), with the full 53 bits of a double's mantissa. */
double rng_uniform(rng *r);

#endif
