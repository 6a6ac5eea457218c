output "name" {
  description = "The cell's name."
  value       = var.name
}

output "region" {
  description = "The cell's region."
  value       = var.region
}

output "namespace" {
  description = "Namespace of the cell."
  value       = local.namespace
}

output "gateway_address" {
  description = "Hostname or IP of the cell's public load balancer (null until the cloud assigns one)."
  value       = try(coalesce(kubernetes_service_v1.gateway.status[0].load_balancer[0].ingress[0].hostname, kubernetes_service_v1.gateway.status[0].load_balancer[0].ingress[0].ip), null)
}

output "endpoint" {
  description = "Base URL of the cell for the control plane's cluster registry and for customers' backends (server API under /v1). https when TLS is terminated on the load balancer (port 443)."
  value = try(format("%s://%s%s",
    var.load_balancer.port == 443 ? "https" : "http",
    coalesce(kubernetes_service_v1.gateway.status[0].load_balancer[0].ingress[0].hostname, kubernetes_service_v1.gateway.status[0].load_balancer[0].ingress[0].ip),
    contains([80, 443], var.load_balancer.port) ? "" : ":${var.load_balancer.port}",
  ), null)
}

output "websocket_url" {
  description = "WebSocket URL end users' apps connect to (append ?token=<user token>)."
  value = try(format("%s://%s%s/v1/connect",
    var.load_balancer.port == 443 ? "wss" : "ws",
    coalesce(kubernetes_service_v1.gateway.status[0].load_balancer[0].ingress[0].hostname, kubernetes_service_v1.gateway.status[0].load_balancer[0].ingress[0].ip),
    contains([80, 443], var.load_balancer.port) ? "" : ":${var.load_balancer.port}",
  ), null)
}

output "pulsar_url" {
  description = "In-cluster pulsar+ssl:// URL of the cell's Pulsar (through its proxy)."
  value       = local.pulsar_url
}

output "pulsar_external_url" {
  description = "pulsar+ssl:// URL of the cell's Pulsar proxy load balancer when pulsar.expose is set (for a control plane in another Kubernetes cluster), else null. Its first pulsar.expose_dns_names entry when given (the certificate names it), else the load balancer's address."
  value       = var.pulsar.expose ? try("pulsar+ssl://${coalesce(try(var.pulsar.expose_dns_names[0], null), data.kubernetes_service_v1.pulsar_proxy[0].status[0].load_balancer[0].ingress[0].hostname, data.kubernetes_service_v1.pulsar_proxy[0].status[0].load_balancer[0].ingress[0].ip)}:6651", null) : null
}

output "pulsar_external_admin_url" {
  description = "https:// URL of Pulsar's admin REST API through the proxy's load balancer when pulsar.expose is set (the control plane's pulsar_admin_url), else null."
  value       = var.pulsar.expose ? try("https://${coalesce(try(var.pulsar.expose_dns_names[0], null), data.kubernetes_service_v1.pulsar_proxy[0].status[0].load_balancer[0].ingress[0].hostname, data.kubernetes_service_v1.pulsar_proxy[0].status[0].load_balancer[0].ingress[0].ip)}:443", null) : null
}

output "pulsar_ca_pem" {
  description = "PEM of the CA that signed the cell's Pulsar certificates (the control plane's pulsar_ca_pem)."
  value       = try(data.kubernetes_secret_v1.pulsar_ca.data["ca.crt"], null)
}

output "pulsar_admin_url" {
  description = "In-cluster URL of Pulsar's admin REST API (the brokers)."
  value       = local.pulsar_admin_url
}

output "feed_topic" {
  description = "The app-config feed topic the gateways read."
  value       = local.feed_topic
}

output "postgres_cluster" {
  description = "Name of the cell's CloudNativePG Cluster (null with an external database): backups, restores and switchovers are done on it."
  value       = var.external_database_secret == null ? local.pg_cluster : null
}

output "gateway_statefulset" {
  description = "Name of the gateways' StatefulSet (rolling restarts: kubectl rollout restart statefulset/<name>)."
  value       = kubernetes_stateful_set_v1.gateway.metadata[0].name
}

output "internal_service" {
  description = "host:port of the nodes' internal API inside the Kubernetes network (ClusterIP). The cluster's internal_endpoint is https:// to this, through TLS the platform provides (docs/OPERATIONS.md)."
  value       = "${kubernetes_service_v1.gateway_internal.metadata[0].name}.${local.namespace}.svc:${var.internal_port}"
}
