package keyclient

import (
	"sync"
)

// retryBudget is a token bucket shared by every call of a Client (as in
// gRPC's retry throttling): each retry spends a token, each successful call
// earns Ratio of one, up to Max. When the service is down, retries stop after
// Max extra calls instead of multiplying the load.
type retryBudget struct {
	mu     sync.Mutex
	tokens float64
	max    float64
	ratio  float64
}

func newRetryBudget(max, ratio float64) *retryBudget {
	return &retryBudget{tokens: max, max: max, ratio: ratio}
}

func (b *retryBudget) success() {
	b.mu.Lock()
	b.tokens = min(b.max, b.tokens+b.ratio)
	b.mu.Unlock()
}

// spend takes one token for a retry; false means the budget is exhausted.
func (b *retryBudget) spend() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
