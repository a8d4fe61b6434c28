package http

import (
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/authd/authd/internal/ratelimit"
)

// clientIP is the address a request came from. Behind trusted proxies it is
// the rightmost X-Forwarded-For entry that is not itself a trusted proxy: each
// proxy appends the address it saw, so entries to the left of that one were
// written by the client and prove nothing.
func clientIP(c *fiber.Ctx, trusted []netip.Prefix) string {
	peer, err := netip.ParseAddr(c.Context().RemoteIP().String())
	if err != nil {
		return c.Context().RemoteIP().String()
	}
	peer = peer.Unmap()
	if !isTrusted(peer, trusted) {
		return peer.String()
	}
	var entries []string
	c.Request().Header.VisitAll(func(k, v []byte) {
		if strings.EqualFold(string(k), fiber.HeaderXForwardedFor) {
			entries = append(entries, strings.Split(string(v), ",")...)
		}
	})
	ip := peer
	for i := len(entries) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(entries[i]))
		if err != nil {
			break // unreadable: nothing left of it can be trusted either
		}
		ip = a.Unmap()
		if !isTrusted(ip, trusted) {
			break
		}
	}
	return ip.String()
}

// rateLimitKey is the client a per-IP limit counts: an IPv4 address as it
// is, an IPv6 one by its /64. One subscriber, host or VM is routinely given a
// whole /64 and can pick any address in it, so counting /128s would let one
// client make 2^64 clients (API.md, "Edge rules"). An IPv4-mapped IPv6
// address is its IPv4 address, or the same client could count twice.
func rateLimitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if a = a.Unmap().WithZone(""); a.Is4() {
		return a.String()
	}
	return ratelimit.Network(a)
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
