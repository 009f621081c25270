-- Argo CD health check for auth.mlflow-token-operator.io/MLflowAccessToken.
-- Install: config/argocd/argocd-cm.yaml (docs/gitops.md). Tested by test/packaging
-- (TestArgoCDHealthCheck) under gopher-lua with only the libraries Argo CD opens for custom
-- checks (base, table, package: no string library, so only `..` and tostring here).
--
--   Progressing  no status yet, the operator has not observed the current generation, no Ready
--                condition yet, or the resource is being deleted and waits for revocation.
--   Healthy      Ready=True: the Secret holds a valid token. Also while renewal is failing but
--                the token is still valid (reason RenewalFailing): the message says so, and the
--                Prometheus alerts (config/prometheus) page before it expires. Degraded here
--                would flap the Application on every Keycloak blip while nothing is broken yet.
--   Degraded     Ready=False with a failure reason: no valid token (never obtained, or expired
--                while renewal kept failing). Jobs that use the Secret get 401s from MLflow.
--
-- A routine rotation changes only status.expiresAt/renewalTime/rotations and the condition's
-- message, never its status or reason, and never metadata.generation: it stays Healthy.
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

if obj.status == nil then
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
if obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = nil
local failing = nil
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      ready = c
    elseif c.type == "RenewalFailing" then
      failing = c
    end
  end
end

if ready == nil then
  hs.message = "Waiting for the Ready condition"
  return hs
end
-- A condition stamped with an older generation describes an older spec.
if ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local msg = ready.message or ""
if ready.status == "True" then
  hs.status = "Healthy"
  if ready.reason == "RenewalFailing" and failing ~= nil and failing.status == "True" then
    hs.message = "Token still valid, renewal failing (" .. tostring(failing.reason) .. "): " .. (failing.message or "")
  else
    hs.message = msg
  end
  return hs
end

if ready.status == "False" then
  if ready.reason == "RevocationFailing" or ready.reason == "Issuing" then
    -- Deletion waits for Keycloak (bounded by --revocation-timeout), or the first token is on its way.
    hs.message = msg
    return hs
  end
  hs.status = "Degraded"
  hs.message = tostring(ready.reason) .. ": " .. msg
  return hs
end

-- Ready=Unknown
hs.message = msg
return hs
