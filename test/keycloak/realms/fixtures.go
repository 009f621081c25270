package realms

// The realms the suites import. Secrets and user passwords are test constants; the suites that
// use them name them too.

const selfAudienceNote = "Test client. Keycloak 26.7 introspection only accepts tokens whose aud contains the introspecting client, hence the audience-self mapper."

var mlflowGroups = []string{"mlflow_users", "mlflow_admins"}

// All is every realm file, in a fixed order.
func All() []Realm {
	return []Realm{mlflowRealm(), strictRealm(), federatedRealm(), e2eRealm(), uninstallRealm(), benchRealm()}
}

// mlflowRealm: test/integration, test/fault, test/tenancy, test/node, `make run-local`. 12-s tokens.
func mlflowRealm() Realm {
	return realm("test/keycloak/realm-mlflow.json", "mlflow", 60, mlflowGroups,
		[]*Client{
			Confidential("mlflow-operator", "mlflowOperatorTestSecret0001").Named("mlflow-token-operator (test)", selfAudienceNote).Lifespan(12).ForMLflow(),
			Confidential("mlflow-operator-refresh", "mlflowOperatorRefreshTestSecret0002").
				Named("mlflow-token-operator with client-credentials refresh tokens (test)", selfAudienceNote).
				Lifespan(12).Attr("client_credentials.use_refresh_token", "true").ForMLflow(),
			Confidential("mlflow-device", "mlflowDeviceTestSecret0003").
				Named("mlflow-token-operator device login (test)", "Test client of kubectl mlflow-token bootstrap (device login) and then of the operator's RefreshToken grant. Consent required, as recommended for device logins. Polling interval 1 s for short tests.").
				Lifespan(12).DeviceLogin().ForMLflow(),
			Confidential("mlflow-device-short", "mlflowDeviceShortTestSecret0004").
				Named("mlflow-token-operator device login, codes expire in 3 s (test)", "Like mlflow-device, but device codes expire after 3 s: the test of a code that expires before the login.").
				Lifespan(12).DeviceLogin().Attr("oauth2.device.code.lifespan", "3").ForMLflow(),
			Confidential("mlflow-rotating", "rotatingSecretBefore0001").Named("client whose secret a test rotates", "").
				Set("directAccessGrantsEnabled", false).Lifespan(12).AudienceSelf(),
		},
		[]*User{
			Person("alice", "Alice", "Example").InGroups("mlflow_users"),
			Person("bob", "Bob", "Example").InGroups("mlflow_users"),
			ServiceAccount("mlflow-operator").AdminAPI(),
			ServiceAccount("mlflow-operator-refresh").AdminAPI(),
			ServiceAccount("mlflow-rotating"),
		}, nil)
}

// strictRealm: strict refresh-token rotation (a refresh token redeemed twice ends the session);
// each test that logs in has a user of its own, so that ending a session never ends another
// test's.
func strictRealm() Realm {
	var users []*User
	for _, name := range []string{"irene", "ivan", "olivia", "paul", "rex", "rita", "sam", "carl"} {
		users = append(users, Person(name, title(name), "Example").InGroups("mlflow_users"))
	}
	users = append(users, ServiceAccount("mlflow-operator").AdminAPI(), ServiceAccount("mlflow-short").AdminAPI())
	return realm("test/keycloak/realm-strict.json", "strict", 12, mlflowGroups,
		[]*Client{
			Confidential("mlflow-operator", "mlflowOperatorTestSecret0001").Named("mlflow-token-operator (strict rotation test)", selfAudienceNote).Lifespan(12).ForMLflow(),
			Confidential("mlflow-short", "mlflowShortTestSecret0003").Named("client whose sessions end after 25 s (expired-chain test)", selfAudienceNote).
				Lifespan(12).Attr("client.session.max.lifespan", "25").Attr("client.session.idle.timeout", "25").ForMLflow(),
		}, users,
		obj{"revokeRefreshToken": true, "refreshTokenMaxReuse": 0})
}

// federatedRealm: clients that authenticate with Kubernetes service-account tokens
// (test/federated); the identity provider "kubernetes" is created at run time.
func federatedRealm() Realm {
	return realm("test/keycloak/realm-federated.json", "federated", 60, []string{"mlflow_users"},
		[]*Client{
			Federated("federated-a", "system:serviceaccount:team-a:sa1").Set("directAccessGrantsEnabled", false).
				Named("authenticates with the Kubernetes service-account token of team-a/sa1", "No secret (federated-jwt). Identity provider 'kubernetes' is created at run time by keycloak.Server.ConfigureKubernetesIdP. audience-self: lets the client introspect its tokens.").
				ForMLflow(),
			Federated("federated-b", "system:serviceaccount:team-b:sa1").Set("directAccessGrantsEnabled", false).
				Named("authenticates with the Kubernetes service-account token of team-b/sa1", "").AudienceSelf(),
			Confidential("secret-client", "secretClientSecret0001").AudienceSelf(),
			Federated("doomed-federated", "system:serviceaccount:doomed:token-sa").AudienceSelf(),
		},
		[]*User{
			ServiceAccount("federated-a").InGroups("mlflow_users").NoDefaultRoles(),
			ServiceAccount("federated-b").NoDefaultRoles(),
			Person("alice", "Alice", "Doe").Password("alicePassword0001"),
			ServiceAccount("secret-client"),
			ServiceAccount("doomed-federated"),
		}, nil)
}

// e2eRealm: MLflow behind mlflow-oidc-auth (test/e2e, test/cluster, test/csi). 25-s tokens.
func e2eRealm() Realm {
	return realm("test/e2e/realm-e2e.json", "mlflow", 25, mlflowGroups,
		[]*Client{
			Confidential("mlflow-operator", "mlflowOperatorTestSecret0001").Named("mlflow-token-operator (end-to-end test)",
				"The operator's client. Client-credentials tokens for user service-account-mlflow-operator (group mlflow_users) carry aud=mlflow and a groups claim, live 25 s.").
				Lifespan(25).ForMLflow(),
			Confidential("mlflow", "mlflowServerTestSecret0003").Named("MLflow server (mlflow-oidc-auth browser login)",
				"The MLflow server's own OIDC client (OIDC_CLIENT_ID). The e2e test only uses bearer tokens; the test admin gets its token from this client by password grant.").
				Set("standardFlowEnabled", true).Set("serviceAccountsEnabled", false).Set("redirectUris", []any{"http://127.0.0.1/*"}).
				Lifespan(25).ForMLflow(),
			Confidential("mlflow-noaud", "mlflowNoAudTestSecret0004").Named("mlflow-noaud (end-to-end test)",
				"MLflowAccepted=False test: like mlflow-operator (group mlflow_users, groups claim) but without an audience mapper, so its tokens lack the audience MLflow pins (OIDC_AUDIENCE=mlflow).").
				Lifespan(25).Groups(),
			Confidential("mlflow-nogroup", "mlflowNoGroupTestSecret0005").Named("mlflow-nogroup (end-to-end test)",
				"MLflow check measurement: aud=mlflow and a groups mapper, but its service account is in no group, so mlflow-oidc-auth does not provision it.").
				Lifespan(25).AudienceMLflow().Groups(),
		},
		[]*User{
			Person("mlflow-admin", "MLflow", "Admin").InGroups("mlflow_admins"),
			ServiceAccount("mlflow-operator").InGroups("mlflow_users").AdminAPI(),
			ServiceAccount("mlflow-noaud").InGroups("mlflow_users"),
			ServiceAccount("mlflow-nogroup"),
		}, nil)
}

// uninstallRealm: 10-minute tokens, so that a token found inactive within the test was revoked,
// not expired (test/uninstall).
func uninstallRealm() Realm {
	return realm("test/uninstall/realm-uninstall.json", "uninstall", 600, nil,
		[]*Client{
			Confidential("mlflow-uninstall", "mlflowUninstallTestSecret0004").Named("mlflow-token-operator uninstall test",
				"Test client with 10-minute tokens: a token found inactive at introspection within the test was revoked, not expired. Keycloak 26.7 introspection only accepts tokens whose aud contains the introspecting client, hence the audience-self mapper.").
				AudienceSelf(),
		},
		[]*User{Person("ursula", "Ursula", "Example"), ServiceAccount("mlflow-uninstall")},
		obj{"ssoSessionIdleTimeout": 3600, "ssoSessionMaxLifespan": 36000})
}

// benchRealm: make bench and make bench-neighbours; events off, so that Keycloak's own event
// store does not weigh on the figures.
func benchRealm() Realm {
	bench := func(id, secret, name, desc string, lifespan int) *Client {
		return Confidential(id, secret).Named(name, desc).Set("directAccessGrantsEnabled", false).Lifespan(lifespan).AudienceMLflow().GroupsInAccessTokens()
	}
	const thirty = "Confidential client with a service account; 30 s access tokens so that the steady state rotates quickly."
	return realm("test/bench/realm-bench.json", "bench", 30, []string{"mlflow_users"},
		[]*Client{
			bench("bench-operator", "benchOperatorSecret0001", "mlflow-token-operator benchmark client", thirty, 30),
			bench("bench-operator-5m", "benchOperatorSecret0002", "mlflow-token-operator benchmark client, five-minute tokens",
				"Confidential client with a service account; 5-minute access tokens, the fleet of the issue (scaling curve, memory, default-limit burst).", 300),
			bench("bench-operator-20s", "benchOperatorSecret0003", "bench-operator-20s", thirty, 20),
		},
		[]*User{
			ServiceAccount("bench-operator").InGroups("mlflow_users"),
			ServiceAccount("bench-operator-5m").InGroups("mlflow_users"),
			ServiceAccount("bench-operator-20s").InGroups("mlflow_users"),
		},
		obj{"eventsEnabled": false, "adminEventsEnabled": false})
}

func title(s string) string { return string(s[0]-'a'+'A') + s[1:] }
