package tokens_test

import (
	"testing"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/tokens"
)

// Every instance keeps a revocation for domain.AccessTokenTTL; a longer
// access token would outlive its revocation and come back to life.
func TestRevocationsOutliveTheLongestAccessToken(t *testing.T) {
	if tokens.MaxAccessTTL > domain.AccessTokenTTL || tokens.DefaultAccessTTL > tokens.MaxAccessTTL {
		t.Fatalf("MaxAccessTTL %v, DefaultAccessTTL %v, revocations kept %v", tokens.MaxAccessTTL, tokens.DefaultAccessTTL, domain.AccessTokenTTL)
	}
}
