# The CloudNativePG operator, once per Kubernetes cluster: it runs the PostgreSQL clusters of the
# control plane and of the cells (failover, backups to object storage, point-in-time recovery).

resource "helm_release" "cnpg" {
  name             = "cnpg"
  repository       = "https://cloudnative-pg.github.io/charts"
  chart            = "cloudnative-pg"
  version          = var.chart_version
  namespace        = var.namespace
  create_namespace = true
  wait             = true
  timeout          = 600
}
