/* Mixtral-style routing of one token, shared by the backends (which run
 * the experts; the choice itself is a few dozen numbers on the host). */
#ifndef ALM_BACKEND_MOE_ROUTING_H
#define ALM_BACKEND_MOE_ROUTING_H

/* softmax(router_logits) over n_experts, the top_k experts by probability
 * (the lowest index first on ties, as torch.topk returns distinct values),
 * their probabilities renormalized to sum to 1: chosen[j] and weight[j]
 * for j < top_k <= n_experts. */
void moe_route(const float *router_logits, int n_experts, int top_k, int *chosen,
               float *weight);

#endif
