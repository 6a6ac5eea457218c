output "namespace" {
  description = "Namespace of the control plane."
  value       = local.namespace
}

output "admin_api_url" {
  description = "In-cluster base URL of the admin API (/admin/v1) and of /healthz, /readyz, /metrics."
  value       = "http://${kubernetes_service_v1.control_plane.metadata[0].name}.${local.namespace}.svc"
}

output "admin_api_load_balancer" {
  description = "Address of the admin API's load balancer when service_type is LoadBalancer (else null)."
  value       = var.service_type == "LoadBalancer" ? try(coalesce(kubernetes_service_v1.control_plane.status[0].load_balancer[0].ingress[0].hostname, kubernetes_service_v1.control_plane.status[0].load_balancer[0].ingress[0].ip), null) : null
}

output "auth_secret_name" {
  description = "Name of the Secret with `operator-token` and `key-hash-secret` (the values are never outputs)."
  value       = local.auth_secret
}

output "database_secret" {
  description = "Secret and key holding the control plane's PostgreSQL URL (name only)."
  value       = local.database_secret
}

output "postgres_cluster" {
  description = "Name of the CloudNativePG Cluster (null with an external database): backups, restores and switchovers are done on it."
  value       = var.external_database_secret == null ? local.pg_cluster : null
}
