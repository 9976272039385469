#include "backend/moe_routing.h"

#include <math.h>
#include <stdbool.h>

#include "backend/backend.h"

void moe_route(const float *router_logits, int n_experts, int top_k, int *chosen,
               float *weight)
{
    float p[MOE_MAX_EXPERTS];
    float max = -INFINITY, sum = 0.0f;
    for (int e = 0; e < n_experts; e++)
        if (router_logits[e] > max)
            max = router_logits[e];
    for (int e = 0; e < n_experts; e++)
        sum += (p[e] = expf(router_logits[e] - max));
    for (int e = 0; e < n_experts; e++)
        p[e] /= sum;
    float picked = 0.0f;
    for (int j = 0; j < top_k; j++) {
        int best = -1;
        for (int e = 0; e < n_experts; e++) {
            bool taken = false;
            for (int m = 0; m < j; m++)
                taken |= chosen[m] == e;
            if (!taken && (best < 0 || p[e] > p[best]))
                best = e;
        }
        chosen[j] = best;
        picked += p[best];
    }
    for (int j = 0; j < top_k; j++)
        weight[j] = p[chosen[j]] / picked;
}
