output "host" {
  description = "In-cluster DNS name of the Redis Service."
  value       = "${kubernetes_service_v1.redis.metadata[0].name}.${var.namespace}.svc"
}

output "port" {
  description = "Redis port."
  value       = 6379
}

output "password_secret_name" {
  description = "Name of the Secret holding the Redis password under the key `password` (null without a password). The value itself is never an output."
  value       = var.password == null ? null : kubernetes_secret_v1.password[0].metadata[0].name
}
