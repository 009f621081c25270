package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// The secretless steady state (issue 11): resources whose KeycloakIssuer has
// clientAuth.serviceAccount, so the operator authenticates the client with a token of the
// namespace's ServiceAccount (a TokenRequest to the API server) instead of a client secret. The
// operator caches that token per ServiceAccount and audience and reuses it for two thirds of its
// life: the figure is TokenRequests per rotation.

// Secretless configures the phase (-secretless and its knobs).
type Secretless struct {
	Run        bool
	N          int
	Steady     time.Duration
	SALifetime time.Duration // operator --serviceaccount-token-lifetime; 0: its default (1h)
}

// SecretlessResult is the secretless burst and steady state.
type SecretlessResult struct {
	N          int
	SALifetime time.Duration // the service-account tokens' lifetime the operator asked for
	Burst      *BurstResult
	Steady     *SteadyResult
	// From the operator's start to the end of the steady state: TokenRequests and the tokens
	// they authenticated (first issuances + rotations).
	PhaseTokenRequests, PhaseTokenRequestsFailed float64
	PhaseTokens                                  int64
	// The steady-state window, from the burst's start, and when the burst's service-account
	// token was due for renewal (two thirds of its lifetime after the burst's start).
	WindowFrom, WindowTo, RenewalDue time.Duration
	// POSTs in the burst: the operator's rest_client_requests_total{method="POST"} and what the
	// API server served (apiserver_request_duration_seconds_count): Secret creates, Event
	// creates, TokenRequests. The harness's own POSTs (the resources) are not among these.
	BurstPosts, APISecretPosts, APIEventPosts, APITokenPosts float64
}

func (e *Env) secretlessPhase(ctx context.Context, c Secretless, flags OperatorFlags, settle time.Duration) (*SecretlessResult, error) {
	if err := e.setupSecretless(ctx); err != nil {
		return nil, fmt.Errorf("setting up federated client authentication in Keycloak: %w", err)
	}
	lifetime := c.SALifetime
	if lifetime > 0 {
		flags.Extra = append(append([]string(nil), flags.Extra...), "--serviceaccount-token-lifetime="+lifetime.String())
	} else {
		lifetime = time.Hour // the operator's default
	}
	r := &SecretlessResult{N: c.N, SALifetime: lifetime, RenewalDue: lifetime * 2 / 3}
	ns := nsSecretless
	logf("secretless steady state: burst N=%d (30 s tokens; service-account tokens of %s), then %s", c.N, lifetime, c.Steady)
	b, err := e.burstPhase(ctx, ns, secretless, c.N, 30*time.Second, flags, "secretless burst", func(op *Operator, b *BurstResult) error {
		burstStart := time.Now().Add(-b.AllReady)
		r.BurstPosts = b.Delta.Posts
		r.APISecretPosts, r.APIEventPosts, r.APITokenPosts = b.API.count("POST secrets"), b.API.count("POST events"), b.API.count("POST serviceaccounts/token")
		logf("  burst: %.0f TokenRequests; operator POSTs %.0f, API server: %.0f Secret creates + %.0f Event creates + %.0f TokenRequests",
			b.Delta.SATokens, r.BurstPosts, r.APISecretPosts, r.APIEventPosts, r.APITokenPosts)
		w, err := e.watch(ctx, ns)
		if err != nil {
			return err
		}
		defer w.Stop()
		s, err := e.settleAndSteady(ctx, op, w, ns, c.N, settle, c.Steady)
		if err != nil {
			return err
		}
		r.Steady = s
		r.WindowFrom, r.WindowTo = s.Start.Sub(burstStart), s.Start.Add(s.Duration).Sub(burstStart)
		end, err := op.Counters()
		if err != nil {
			return err
		}
		r.PhaseTokenRequests, r.PhaseTokenRequestsFailed = end.SATokens, end.SATokensFailed
		rot, err := e.sumRotations(ctx, ns)
		if err != nil {
			return err
		}
		r.PhaseTokens = int64(b.N) + rot
		logf("  whole phase: %.0f TokenRequests (%.0f failed) for %d tokens", r.PhaseTokenRequests, r.PhaseTokenRequestsFailed, r.PhaseTokens)
		return nil
	})
	r.Burst = b
	return r, err
}

// count is the number of requests of one kind ("VERB resource[/subresource]").
func (d APIDelta) count(key string) float64 {
	for _, x := range d {
		if x.Key == key {
			return x.Count
		}
	}
	return 0
}

// keycloakMsPerRotation is Keycloak's CPU time per rotation in a steady state.
func keycloakMsPerRotation(s *SteadyResult) float64 {
	return div(s.Cores["keycloak"]*s.Duration.Seconds()*1000, float64(s.Rotations))
}

// secretlessRows are the summary rows of the phase.
func (r *Report) secretlessRows() [][4]string {
	sl := r.Secretless
	if sl == nil || sl.Steady == nil {
		return nil
	}
	s := sl.Steady
	rot := float64(s.Rotations)
	tr := div(s.Delta.SATokens, rot)
	phase := div(sl.PhaseTokenRequests, float64(sl.PhaseTokens))
	wr := div(s.Delta.Writes, rot)
	kc := div(s.Delta.KC, rot)
	// Each resource's state Secret keeps a copy of the current service-account token (its
	// revocation kit, for revoking after the namespace's ServiceAccount is gone): when the
	// operator renews the service-account token, every resource's state Secret is updated once.
	kit, kitNote := sl.kitUpdates(), ""
	if kit > 0 {
		kitNote = fmt.Sprintf("; the service-account token was renewed in the window, and each of the %d resources' state Secrets took the new one for its revocation kit: %.0f PUTs, %s per rotation", sl.N, kit, f2(div(kit, rot)))
	}
	failed := ""
	if sl.PhaseTokenRequestsFailed > 0 {
		failed = fmt.Sprintf("; %.0f of them failed", sl.PhaseTokenRequestsFailed)
	}
	return [][4]string{
		{fmt.Sprintf("Secretless steady state N=%d, 30 s tokens, %s (clientAuth.serviceAccount; service-account tokens of %s, each reused for two thirds of it): rotations", s.N, s.Duration.Round(time.Second), sl.SALifetime),
			"", fmt.Sprintf("%d (%s/s)", s.Rotations, f1(rot/s.Duration.Seconds())), ""},
		{"**TokenRequests per rotation (secretless)**", "≤ 0.1",
			fmt.Sprintf("**%s** (%.0f in the window for %d rotations; whole phase from the operator's start: %.0f for %d tokens = %s%s)",
				f3(tr), s.Delta.SATokens, s.Rotations, sl.PhaseTokenRequests, sl.PhaseTokens, f4(phase), failed),
			mark(tr <= 0.1 && phase <= 0.1)},
		{"Keycloak requests per rotation (secretless)", "1.0", f2(kc), mark(kc <= 1.01)},
		{"API writes per rotation (secretless; PUT+PATCH+POST, TokenRequests are POSTs)", "≤ 2 + kit updates",
			fmt.Sprintf("%s (PUT %s, POST %s, PATCH %s)%s", f2(wr), f2(div(s.Delta.Puts, rot)), f2(div(s.Delta.Posts, rot)), f2(div(s.Delta.Patches, rot)), kitNote),
			mark(wr <= 2.0+div(kit, rot)+0.005)},
		{"API reads per rotation (GET, secretless)", "", f2(div(s.Delta.Gets, rot)), ""},
		{"Tokens that expired before being rotated (secretless)", "0",
			fmt.Sprintf("%d (%d in the %s after the burst)", s.Expired, s.TransitionExpired, s.Settle), mark(s.Expired == 0 && s.TransitionExpired == 0)},
	}
}

// kitUpdates is the number of revocation-kit updates expected in the steady-state window: one per
// resource when the service-account token's renewal fell inside it.
func (sl *SecretlessResult) kitUpdates() float64 {
	if sl.renewalInWindow() {
		return float64(sl.N)
	}
	return 0
}

// renewalInWindow reports whether the service-account token's renewal fell inside the
// steady-state window.
func (sl *SecretlessResult) renewalInWindow() bool {
	return sl.RenewalDue >= sl.WindowFrom && sl.RenewalDue <= sl.WindowTo
}

// secretlessSection is the report's section on the phase.
func (r *Report) secretlessSection() string {
	var sb strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&sb, format, a...) }
	w("## 3b. Steady state without client secrets (30 s tokens)\n\n")
	sl := r.Secretless
	if sl == nil || sl.Steady == nil {
		w("Not measured in this run (`-secretless`).\n\n")
		return sb.String()
	}
	s := sl.Steady
	rot := float64(s.Rotations)
	w("%d resources in one namespace whose KeycloakIssuer has `clientAuth.serviceAccount`: the operator authenticates the Keycloak client "+
		"(\"Signed JWT - Federated\", bound to `system:serviceaccount:%s:%s`) with a token of that ServiceAccount, which it gets from the API server "+
		"(a TokenRequest, audience the realm's issuer URL) and reuses, for every resource with the same ServiceAccount and audience, until two thirds of its life is used. "+
		"The API server (envtest) is the service-account issuer; Keycloak's Kubernetes identity provider trusts it (its CA in Keycloak's truststore, anonymous OIDC discovery). "+
		"The operator runs with the raised limits and `--serviceaccount-token-lifetime=%s` (%s: a new service-account token every %s). "+
		"Burst of %d, then %s of transition, then the counted window of %s; counted as in section 3, plus TokenRequests: `%s` (all outcomes).\n\n",
		sl.N, nsSecretless, saSecretless, sl.SALifetime, lifetimeNote(sl.SALifetime), sl.RenewalDue.Round(time.Second), sl.N, s.Settle, s.Duration.Round(time.Second), metricSATokenRequests)
	w("| rotations | rotations/s | TokenRequests | per rotation | whole phase: TokenRequests / tokens | Keycloak req. | per rotation | PUT | POST | PATCH | writes/rotation | GET/rotation | expired | CPU s / 1,000 rotations | Keycloak CPU ms / rotation | CPU cores (per process) |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	w("| %d | %s | %.0f | %s | %.0f / %d | %.0f | %s | %.0f | %.0f | %.0f | %s | %s | %d | %s | %s | %s |\n\n",
		s.Rotations, f1(rot/s.Duration.Seconds()), s.Delta.SATokens, f3(div(s.Delta.SATokens, rot)), sl.PhaseTokenRequests, sl.PhaseTokens,
		s.Delta.KC, f2(div(s.Delta.KC, rot)), s.Delta.Puts, s.Delta.Posts, s.Delta.Patches, f2(div(s.Delta.Writes, rot)), f2(div(s.Delta.Gets, rot)),
		s.Expired, f2(div(s.Delta.CPU*1000, rot)), f2(keycloakMsPerRotation(s)), s.Cores)
	w("Operator: %s. API server: %s.\n\n", s.Delta.Latencies(), s.API)
	in := "outside"
	if sl.renewalInWindow() {
		in = "inside"
	}
	who := "the first issuance asked for it"
	if sl.Burst.Delta.SATokens > 1 {
		who = "first issuances running at the same time each found no cached token and asked"
	}
	w("- **When TokenRequests happen.** The burst's first issuances ask for the service-account token (%.0f TokenRequests in the burst of %d: %s); "+
		"after that one token serves the whole namespace until %s after the burst. "+
		"The window ran from %s to %s after the burst's start, so that renewal fell %s it. "+
		"In the long run a ServiceAccount costs one TokenRequest per %s, whatever the number of resources: per rotation that is 1 / (rotations of all resources using the ServiceAccount in %s); "+
		"here %s rotations/s make %s. Few resources with long tokens per ServiceAccount are the costly case: one resource alone on its ServiceAccount with five-minute tokens "+
		"renews every ≈ 185 s and uses a service-account token for ⌈%s / 185 s⌉ rotations: %s TokenRequests per rotation (at the default 1 h: 1/13 = 0.08).\n",
		sl.Burst.Delta.SATokens, sl.N, who, sl.RenewalDue.Round(time.Second), sl.WindowFrom.Round(time.Second), sl.WindowTo.Round(time.Second), in,
		sl.RenewalDue.Round(time.Second), sl.RenewalDue.Round(time.Second), f1(rot/s.Duration.Seconds()), f4(1/(rot/s.Duration.Seconds()*sl.RenewalDue.Seconds())),
		sl.RenewalDue.Round(time.Second), f2(1/math.Ceil(sl.RenewalDue.Seconds()/185)))
	same := "equal: TokenRequests are counted among the POSTs"
	if d := sl.BurstPosts - (sl.APISecretPosts + sl.APIEventPosts + sl.APITokenPosts); d != 0 {
		same = fmt.Sprintf("different by %+.0f (other requests of the operator in the burst)", d)
	}
	w("- **TokenRequests are POSTs** (`POST serviceaccounts/<name>/token`) and client-go counts them in `rest_client_requests_total{method=\"POST\"}` like any request of the operator's REST clients, "+
		"which carries no resource label: in the writes per rotation above they count as POSTs. Checked in the burst: the operator counted %.0f POSTs; "+
		"the API server served %.0f Secret creates + %.0f Event creates + %.0f TokenRequests = %.0f: %s.\n",
		sl.BurstPosts, sl.APISecretPosts, sl.APIEventPosts, sl.APITokenPosts, sl.APISecretPosts+sl.APIEventPosts+sl.APITokenPosts, same)
	cmp := ""
	if r.Steady != nil {
		cmp = fmt.Sprintf(" (section 3, with client secrets: %s)", f2(div(r.Steady.Delta.Gets, float64(r.Steady.Rotations))))
	}
	w("- **Reads.** No client secret to read; the ServiceAccount's existence is checked in the operator's cache of ServiceAccount metadata at every rotation "+
		"(a deleted ServiceAccount stops the issuance at once) and the service-account token comes from memory: %s GETs per rotation%s.\n", f2(div(s.Delta.Gets, rot)), cmp)
	if r.Steady != nil {
		w("- **Keycloak's cost.** Keycloak checks the service-account token's signature (keys fetched once from the API server's JWKS) instead of comparing a secret: "+
			"%s ms of Keycloak CPU per rotation here, %s ms with client secrets (section 3); different N, so compare with care.\n",
			f2(keycloakMsPerRotation(s)), f2(keycloakMsPerRotation(r.Steady)))
	}
	w("\n")
	return sb.String()
}

func lifetimeNote(d time.Duration) string {
	switch {
	case d <= 10*time.Minute:
		return "Kubernetes' minimum, so that the window can include a renewal of the service-account token; the operator's default is 1h"
	case d == time.Hour:
		return "the operator's default"
	}
	return "the operator's default is 1h"
}

func f3(x float64) string { return fmt.Sprintf("%.3f", x) }
func f4(x float64) string { return fmt.Sprintf("%.4f", x) }
