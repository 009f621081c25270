package v1alpha1

// Condition types.
const (
	// ConditionReady is True while the Secret holds a token that has not expired.
	ConditionReady = "Ready"
	// ConditionRenewalFailing is True when the last attempt to obtain a token failed. While the
	// current token is still valid, Ready stays True with reason RenewalFailing.
	ConditionRenewalFailing = "RenewalFailing"
	// ConditionRefreshChainExpiring is True when the refresh chain will end before it can be
	// renewed for long (RefreshToken grant: a person must bootstrap a new token soon).
	ConditionRefreshChainExpiring = "RefreshChainExpiring"
	// ConditionReconciling is present (True) while the operator works towards the spec: no valid
	// token yet, or a token for an older spec, and the failures so far are ones that can pass on
	// their own (Keycloak down, timeouts). kstatus, Flux and Argo CD read it as "in progress".
	ConditionReconciling = "Reconciling"
	// ConditionStalled is present (True) when the last attempt failed for a reason only a change
	// can fix (wrong credentials, a missing Secret, an unknown realm, an invalid template).
	// kstatus reads it as Failed, so `flux`/`kubectl wait` pipelines fail fast instead of timing
	// out. The operator keeps retrying with backoff, so a fix elsewhere (a Secret created, a client
	// enabled in Keycloak) is picked up without an edit of the resource.
	ConditionStalled = "Stalled"
)

// Finalizer makes deletion wait until the token is revoked and the Secrets are deleted.
const Finalizer = "auth.mlflow-token-operator.io/revoke"

// Condition reasons. Each is documented in docs/troubleshooting.md with its cause and fix.
const (
	// ReasonTokenValid: the Secret holds a valid token and renewal is scheduled.
	ReasonTokenValid = "TokenValid"
	// ReasonRenewalFailing: renewal failed but the current token is still valid (Ready=True).
	ReasonRenewalFailing = "RenewalFailing"
	// ReasonRenewalSucceeded: RenewalFailing=False after a successful attempt.
	ReasonRenewalSucceeded = "RenewalSucceeded"
	// ReasonIssuing: no token yet, first attempt pending (also Reconciling's reason then).
	ReasonIssuing = "Issuing"
	// ReasonReissuing: Reconciling=True while a token for the current spec (another Keycloak,
	// client or grant) replaces the one in the Secret.
	ReasonReissuing = "Reissuing"
	// ReasonTokenExpired: the token in the Secret expired and no new one could be obtained.
	ReasonTokenExpired = "TokenExpired"

	// ReasonClientSecretNotFound: the Secret or key named by clientSecretRef does not exist.
	ReasonClientSecretNotFound = "ClientSecretNotFound"
	// ReasonInvalidClientSecret: the referenced client secret is empty or unusable.
	ReasonInvalidClientSecret = "InvalidClientSecret"
	// ReasonInvalidClientCredentials: Keycloak rejected the client id / secret pair (or the client
	// does not exist: Keycloak answers the same for both).
	ReasonInvalidClientCredentials = "InvalidClientCredentials"
	// ReasonUnauthorizedClient: the client may not use this grant (e.g. service accounts disabled).
	ReasonUnauthorizedClient = "UnauthorizedClient"
	// ReasonInvalidScope: Keycloak rejected a requested scope.
	ReasonInvalidScope = "InvalidScope"
	// ReasonRealmNotFound: Keycloak answered 404 for the realm.
	ReasonRealmNotFound = "RealmNotFound"
	// ReasonKeycloakUnreachable: connection refused, DNS failure, TLS failure.
	ReasonKeycloakUnreachable = "KeycloakUnreachable"
	// ReasonKeycloakTLSError: Keycloak's certificate could not be verified (unknown CA, wrong host
	// name, expired). Set keycloak.caBundle or caConfigMapRef to the CA that issued it.
	ReasonKeycloakTLSError = "KeycloakTLSError"
	// ReasonCABundleNotFound: the ConfigMap or key named by keycloak.caConfigMapRef does not exist.
	ReasonCABundleNotFound = "CABundleNotFound"
	// ReasonInvalidCABundle: the CA bundle holds no PEM certificate.
	ReasonInvalidCABundle = "InvalidCABundle"
	// ReasonKeycloakTimeout: Keycloak did not answer in time.
	ReasonKeycloakTimeout = "KeycloakTimeout"
	// ReasonKeycloakError: Keycloak answered with a server error (5xx) or another unexpected status.
	ReasonKeycloakError = "KeycloakError"
	// ReasonInvalidTokenResponse: Keycloak's answer could not be used (no token, bad expiry).
	ReasonInvalidTokenResponse = "InvalidTokenResponse"
	// ReasonRevocationFailing: the resource is being deleted and waits for Keycloak to revoke the token.
	ReasonRevocationFailing = "RevocationFailing"
	// ReasonUnsupportedGrant: the grant type is not implemented by this operator version.
	ReasonUnsupportedGrant = "UnsupportedGrant"
	// ReasonRefreshTokenNotFound: the Secret or key named by refreshTokenSecretRef does not exist.
	ReasonRefreshTokenNotFound = "RefreshTokenNotFound"
	// ReasonRefreshTokenInvalid: Keycloak rejected the refresh token (invalid_grant): expired,
	// revoked, reused under strict rotation, or issued to another client. Bootstrap a new one.
	ReasonRefreshTokenInvalid = "RefreshTokenInvalid"
	// ReasonUserCredentialsNotFound: the Secret or keys named by passwordSecretRef do not exist.
	ReasonUserCredentialsNotFound = "UserCredentialsNotFound"
	// ReasonInvalidUserCredentials: Keycloak rejected the user name or password, or the account
	// is disabled or not fully set up.
	ReasonInvalidUserCredentials = "InvalidUserCredentials"
	// ReasonChainExpiring: RefreshChainExpiring=True.
	ReasonChainExpiring = "ChainExpiring"
	// ReasonChainHealthy: RefreshChainExpiring=False.
	ReasonChainHealthy = "ChainHealthy"
	// ReasonSecretConflict: a Secret with the target name exists and is not owned by this resource.
	ReasonSecretConflict = "SecretConflict"
	// ReasonInvalidSecretTemplate: spec.secretTemplate holds labels or annotations the API server
	// would refuse on a Secret; no token is requested until it is fixed.
	ReasonInvalidSecretTemplate = "InvalidSecretTemplate"
	// ReasonSecretRejected: the API server refused to write the Secret (422: invalid, or a
	// validating admission policy or webhook said no). No token is requested until a dry run of
	// the write passes.
	ReasonSecretRejected = "SecretRejected"
	// ReasonSecretForbidden: the operator may not write Secrets in this namespace (RBAC, or the
	// namespace is not among those it watches).
	ReasonSecretForbidden = "SecretForbidden"
	// ReasonIssuerNotFound: the KeycloakIssuer or ClusterKeycloakIssuer named by spec.issuerRef
	// does not exist.
	ReasonIssuerNotFound = "IssuerNotFound"
	// ReasonIssuerNotAllowed: the ClusterKeycloakIssuer does not admit the resource's namespace
	// (its namespaceSelector), or the resource asks for a client the issuer does not give it.
	ReasonIssuerNotAllowed = "IssuerNotAllowed"
	// ReasonIssuerNotReady: the issuer's realm did not answer its last check, or its credentials
	// are missing; the message quotes the issuer's own condition.
	ReasonIssuerNotReady = "IssuerNotReady"
	// ReasonInsecureURL: the Keycloak URL is plain http:// and the platform does not allow it
	// (operator flag --allow-insecure-http, or allowInsecureHTTP on a ClusterKeycloakIssuer).
	ReasonInsecureURL = "InsecureURL"
	// ReasonHostNotAllowed: the Keycloak host is not among the operator's --allowed-keycloak-hosts.
	ReasonHostNotAllowed = "HostNotAllowed"
	// ReasonURLNotAllowed: the Keycloak URL carries credentials, a query or a fragment.
	ReasonURLNotAllowed = "URLNotAllowed"
	// ReasonServiceAccountNotFound: the ServiceAccount whose tokens authenticate the client does
	// not exist in the resource's namespace.
	ReasonServiceAccountNotFound = "ServiceAccountNotFound"
	// ReasonServiceAccountTokenForbidden: the operator may not request tokens of the ServiceAccount.
	ReasonServiceAccountTokenForbidden = "ServiceAccountTokenForbidden"
	// ReasonIssuerReady: an issuer's Ready=True: its realm answered and its credentials are in place.
	ReasonIssuerReady = "RealmAnswered"
	// ReasonIssuerMismatch: the realm's discovery document states another issuer than the URL
	// the issuer names (a proxy or Keycloak's hostname setting): tokens would carry that issuer.
	ReasonIssuerMismatch = "IssuerMismatch"

	// ReasonForeignRefreshToken: the bootstrap refresh token belongs to another client, or to a
	// session another MLflowAccessToken holds (a token leaked from elsewhere). It is never sent to
	// Keycloak; put a token of your own into the Secret.
	ReasonForeignRefreshToken = "ForeignRefreshToken"

	// ReasonSecretModified (Warning event): the consumer or state Secret does not hold what the
	// operator wrote there for this resource (edited, copied from elsewhere, restored from an
	// older copy); its content is ignored and a new token is issued.
	ReasonSecretModified = "SecretModified"
	// ReasonSecretRestored (Warning event): the consumer Secret holds a token this resource issued,
	// but an older one than it issued last (a backup or a GitOps tool restored an old copy); a
	// new token is issued.
	ReasonSecretRestored = "SecretRestored"
	// ReasonSecretContested: the Secret was found changed by someone else a fourth time within a
	// minute: another writer (a second installation of the operator, a tool that keeps restoring
	// it) is overwriting it. Instead of re-issuing at each change, the operator issues at most
	// three tokens a minute for it and otherwise waits with backoff; remove the other writer.
	ReasonSecretContested = "SecretContested"
	// ReasonRevocationFailedEvent (Warning event): one attempt to revoke at deletion failed; it is
	// retried until the revocation timeout.
	ReasonRevocationFailedEvent = "RevocationFailed"
	// ReasonRevocationAbandoned (Warning event): deletion finished without revocation (it gave up
	// after the revocation timeout, or nothing was left to revoke with): the token stays valid
	// until it expires. Its own reason, so that it is not folded into the retries' series.
	ReasonRevocationAbandoned = "RevocationAbandoned"
	// ReasonSupersededRevocationFailed (Warning event): the token a rotation replaced could not be
	// revoked (spec.revocation.revokeSuperseded); retried until it expires.
	ReasonSupersededRevocationFailed = "SupersededRevocationFailed"
	// ReasonRenewalWindowAdjusted (Warning event): spec.renewBefore cannot be honoured for a token
	// of this lifetime; the event says what is done instead.
	ReasonRenewalWindowAdjusted = "RenewalWindowAdjusted"
)

// Annotations understood on an MLflowAccessToken.
const (
	// AnnotationSkipRevocation set to "true" makes deletion skip revoking the token at Keycloak.
	AnnotationSkipRevocation = "auth.mlflow-token-operator.io/skip-revocation"
	// AnnotationRenewRequest asks for a rotation now (kubectl mlflow-token renew). Its value is
	// the request's time; the operator honours each new value once and records it in
	// status.lastRenewalRequest.
	AnnotationRenewRequest = "auth.mlflow-token-operator.io/renew-requested-at"
	// AnnotationRevokeRequest asks to revoke the current access token and rotate (kubectl
	// mlflow-token revoke, for a leaked token). Honoured once per value; recorded in
	// status.lastRevocationRequest.
	AnnotationRevokeRequest = "auth.mlflow-token-operator.io/revoke-requested-at"
)
