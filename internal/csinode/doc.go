// Package csinode is the CSI node plugin that delivers MLflow tokens without a Secret: each pod
// that declares an inline volume of this driver gets its own token, minted with its own
// service-account identity, rotated in place and revoked when the pod ends.
//
// How a volume lives:
//
//   - NodePublishVolume (the kubelet, at pod start): the volume attributes name an issuer and a
//     client; the issuer's scope rules (internal/scope: namespace selector, readiness, guardrails,
//     CA) are checked before anything is asked of Keycloak. The kubelet hands over the pod's own
//     service-account token for the realm's audience (CSIDriver tokenRequests); it authenticates
//     the client (federated client assertion) in a client-credentials grant. The token is written
//     into the target directory as the kubelet writes Secret volumes (files behind a ..data
//     symlink, swapped atomically), and the volume's record is kept in the node-local state
//     directory (root only) so that a restarted plugin carries on. A refusal fails the call with
//     a message that names the cause (the kubelet makes it a pod event); nothing is written.
//   - Republish (requiresRepublish: the kubelet calls NodePublishVolume again about every sync
//     period, with fresh service-account tokens): the record takes the new service-account token;
//     the access token is left alone while it is valid.
//   - Rotation: a timer per volume fires at the renewal time internal/policy computes; the new
//     token replaces the files at once (no API write of any kind). When Keycloak fails, the valid
//     token stays and the attempt is retried with policy.Backoff until it expires.
//   - NodeUnpublishVolume (the pod ends): the files go, the token is revoked at Keycloak (retried
//     in the background while Keycloak does not answer and the token is still valid), the record
//     goes. A pod deleted while the plugin was down is unpublished by the kubelet once the
//     plugin has registered again, or found by the sweep (its volume directory is gone).
//
// The plugin reads issuers, namespaces' labels and CA ConfigMaps, and writes nothing to the API
// server; it never reads a Secret (an issuer whose CA is in a Secret, or whose clients
// authenticate with a client secret, is refused with a message saying so).
package csinode
