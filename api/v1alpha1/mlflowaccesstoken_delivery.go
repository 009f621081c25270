package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Delivery of new tokens to the pods that mount the Secret.
//
// The kubelet rewrites a pod's Secret volumes at once when the pod object changes, and otherwise
// only at its periodic sync of the pod (up to about 1.5 × its syncFrequency, 90 s with the
// default of 1 minute). After each rotation the operator therefore "nudges" the pods that opted in
// with LabelConsumer: it sets AnnotationTokenRotatedAt on them (a metadata change, no restart), and
// their kubelet writes the new token into the volume within a second or so.

// LabelConsumer on a pod (value "true") asks the operator to nudge the pod after each rotation of
// a Secret it mounts as a volume. Put it on the pod template of the Job, Deployment or notebook.
const LabelConsumer = "auth.mlflow-token-operator.io/consumer"

// AnnotationTokenRotatedAt is the annotation the operator sets on consumer pods after a rotation:
// the time the new token was written to the Secret (RFC 3339, nanoseconds), never the token or a
// digest of it. Only its change matters: it makes the kubelet sync the pod.
const AnnotationTokenRotatedAt = "auth.mlflow-token-operator.io/token-rotated-at"

// ConditionDeliveryAtRisk is True when the time between a token's renewal and its expiry is
// shorter than the time its consumers may need to receive the new token: pods may then read a
// token that has expired. It is informational: it does not change Ready, and kstatus ignores it.
const ConditionDeliveryAtRisk = "DeliveryAtRisk"

// Reasons of ConditionDeliveryAtRisk and of the events about delivery.
const (
	// ReasonMarginBelowKubeletSync: no labelled consumer pod mounts the Secret (or nudging is off),
	// so pods get a new token at the kubelet's periodic sync, which may come after the old token
	// expired.
	ReasonMarginBelowKubeletSync = "MarginBelowKubeletSync"
	// ReasonMarginBelowNudgeDelivery: even nudged, the consumer pods may get the new token after
	// the old one expired (a very short token, or many pods at the nudge rate limit).
	ReasonMarginBelowNudgeDelivery = "MarginBelowNudgeDelivery"
	// ReasonMarginSufficient: consumers receive each new token well before the old one expires.
	ReasonMarginSufficient = "MarginSufficient"
	// ReasonConsumersNotUpdatable (Warning event): labelled pods read the Secret only through
	// environment variables or subPath mounts, which the kubelet never updates.
	ReasonConsumersNotUpdatable = "ConsumersNotUpdatable"
	// ReasonNudgeFailed (Warning event): some consumer pods could not be nudged; they receive the
	// new token at the kubelet's next periodic sync.
	ReasonNudgeFailed = "NudgeFailed"
)

// ConsumersStatus reports how the token named by TokenIssuedAt reached the pods labelled
// LabelConsumer that consume the Secret. Pods without the label are not seen by the operator.
type ConsumersStatus struct {
	// TokenIssuedAt identifies the token these figures are about (status.issuedAt of that token).
	// +optional
	TokenIssuedAt *metav1.Time `json:"tokenIssuedAt,omitempty"`

	// Pods is how many labelled pods mounted the Secret as a volume when the token was written.
	// +optional
	Pods int32 `json:"pods,omitempty"`

	// Nudged is how many of them were nudged for this token (their kubelet then rewrites the
	// volume at once). Nudges run after the Secret write: Nudged may trail Pods for a moment.
	// +optional
	Nudged int32 `json:"nudged,omitempty"`

	// Failed is how many could not be nudged (forbidden, rejected, throttled); they receive the
	// token at their kubelet's next periodic sync. Pods deleted meanwhile count in neither.
	// +optional
	Failed int32 `json:"failed,omitempty"`

	// NotUpdatable is how many labelled pods read the Secret only through environment variables
	// or subPath mounts: they keep the token they started with until they restart.
	// +optional
	NotUpdatable int32 `json:"notUpdatable,omitempty"`

	// LastNudgeTime is when the last consumer pod was nudged for this token.
	// +optional
	LastNudgeTime *metav1.Time `json:"lastNudgeTime,omitempty"`
}
