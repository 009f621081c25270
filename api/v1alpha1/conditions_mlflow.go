package v1alpha1

// The MLflowAccepted condition: does the MLflow tracking server accept the token? It is present
// only when a tracking URI is configured. It never changes Ready (a token MLflow rejects is still
// a valid token in the Secret, and Ready is about the Secret) and it is neither Reconciling nor
// Stalled, so kstatus, Flux and Argo CD read a rejected token as Current: the rejection is a
// problem of MLflow's or Keycloak's configuration, which the operator cannot reconcile away.
// Each reason is documented in docs/troubleshooting.md.
const (
	// ConditionMLflowAccepted is True when MLflow accepted the token in an authenticated read,
	// False when it answered 401 or 403, Unknown while there is no answer.
	ConditionMLflowAccepted = "MLflowAccepted"

	// ReasonMLflowAccepted: MLflow answered the check with 2xx (MLflowAccepted=True). Also the
	// reason of the Normal event when MLflow accepts a token after rejecting one.
	ReasonMLflowAccepted = "Accepted"
	// ReasonMLflowRejected: MLflow answered 401 or 403 (MLflowAccepted=False); the message names
	// the likely cause, read from the token's claims (audience, issuer, user name, groups, expiry).
	ReasonMLflowRejected = "Rejected"
	// ReasonMLflowPending: a check of the current token is queued or running, or there is no
	// token to check yet (MLflowAccepted=Unknown).
	ReasonMLflowPending = "Pending"
	// ReasonMLflowNotChecked: the current token has not been checked (the tracking URI changed
	// since the last check, or the operator restarted and changed the spec since); the next new
	// token is checked (MLflowAccepted=Unknown).
	ReasonMLflowNotChecked = "NotChecked"
	// ReasonMLflowUnreachable: the check got no answer: connection or TLS error, timeout, 429 or
	// 5xx (MLflowAccepted=Unknown). The next new token is checked again.
	ReasonMLflowUnreachable = "MLflowUnreachable"
	// ReasonMLflowUnexpectedAnswer: MLflow answered neither yes nor no: a redirect (a login proxy
	// in front of MLflow), 404 (the tracking URI is not MLflow's base URL) or another status
	// (MLflowAccepted=Unknown).
	ReasonMLflowUnexpectedAnswer = "UnexpectedAnswer"
	// ReasonMLflowCheckNotAllowed: the tracking URI is not one the operator may send a token to
	// (its host is not among --allowed-mlflow-hosts, or it is plain http:// and the platform does
	// not allow plain HTTP): MLflow is not asked.
	ReasonMLflowCheckNotAllowed = "CheckNotAllowed"
	// ReasonMLflowRejectedEvent is the reason of the Warning event recorded once per distinct
	// rejection (repeats fold into one event series).
	ReasonMLflowRejectedEvent = "MLflowRejected"
)
