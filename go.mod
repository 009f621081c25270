module github.com/mlflow-token-operator/mlflow-token-operator

go 1.26.8
