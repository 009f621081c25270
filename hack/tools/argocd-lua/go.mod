// Tool module: Argo CD-like Lua health check runner (built by hack/packaging-tools.sh).
module github.com/mlflow-token-operator/mlflow-token-operator/hack/tools/argocd-lua

go 1.26.0

require github.com/yuin/gopher-lua v1.1.2
