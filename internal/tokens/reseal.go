package tokens

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/seal"
)

// Reseal re-seals under sealer's first key the signing keys' private halves
// (retired ones too: they are still sealed under the old key) and the
// token_secrets that are sealed under another of its keys, so that after a
// rotation of the master key the old one can be dropped. Running Keyrings
// are unaffected: they hold the opened keys, and the plaintexts stay the
// same. Each row is written only where it still holds what was read. It
// returns a report per table, signing_keys first.
func Reseal(ctx context.Context, pool *pgxpool.Pool, sealer *seal.Sealer, o seal.ResealOptions) ([]seal.ResealReport, error) {
	var out []seal.ResealReport
	r, err := seal.Reseal(ctx, sealer, signingKeysTable(pool), o)
	out = append(out, r)
	if err != nil {
		return out, fmt.Errorf("tokens: %w", err)
	}
	r, err = seal.Reseal(ctx, sealer, tokenSecretsTable(pool), o)
	out = append(out, r)
	if err != nil {
		return out, fmt.Errorf("tokens: %w", err)
	}
	return out, nil
}

func signingKeysTable(pool *pgxpool.Pool) seal.ResealTable[string] {
	return seal.SealedColumn[string]{Table: "signing_keys", Key: "kid", KeyType: "text", KID: "private_kid", Box: "private_sealed", AAD: keyAAD}.ResealTable(pool)
}

func tokenSecretsTable(pool *pgxpool.Pool) seal.ResealTable[string] {
	return seal.SealedColumn[string]{Table: "token_secrets", Key: "name", KeyType: "text", KID: "seal_kid", Box: "sealed", AAD: secretAAD}.ResealTable(pool)
}
