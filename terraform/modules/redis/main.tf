# One Redis for a Starling plane: presence, routing and rate limits (cells) or idempotency keys
# (control plane). No persistence on purpose: the tests (tests/e2e/cell.rs) show a cell loses no
# message when Redis restarts with its state lost; the gateways re-register their connections.

locals {
  labels = {
    "app.kubernetes.io/name"       = "redis"
    "app.kubernetes.io/instance"   = var.name
    "app.kubernetes.io/part-of"    = "starling"
    "app.kubernetes.io/managed-by" = "terraform"
  }
  selector = {
    "app.kubernetes.io/name"     = "redis"
    "app.kubernetes.io/instance" = var.name
  }
  base_args = ["--save", "", "--appendonly", "no", "--maxmemory", var.max_memory, "--maxmemory-policy", "volatile-lru"]
}

resource "kubernetes_secret_v1" "password" {
  count = var.password == null ? 0 : 1

  metadata {
    name      = "${var.name}-auth"
    namespace = var.namespace
    labels    = local.labels
  }

  data = {
    password = var.password
  }
}

resource "kubernetes_deployment_v1" "redis" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }

  spec {
    replicas = 1

    strategy {
      type = "Recreate"
    }

    selector {
      match_labels = local.selector
    }

    template {
      metadata {
        labels = local.labels
      }

      spec {
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = 999
          run_as_group    = 999
          fs_group        = 999

          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name  = "redis"
          image = var.image
          # Kubernetes expands $(REDIS_PASSWORD) in args, so the password never sits in the spec.
          args = var.password == null ? local.base_args : concat(local.base_args, ["--requirepass", "$(REDIS_PASSWORD)"])

          dynamic "env" {
            for_each = var.password == null ? [] : [1]
            content {
              name = "REDIS_PASSWORD"
              value_from {
                secret_key_ref {
                  name = kubernetes_secret_v1.password[0].metadata[0].name
                  key  = "password"
                }
              }
            }
          }

          port {
            name           = "redis"
            container_port = 6379
          }

          resources {
            requests = {
              cpu    = var.resources.cpu_request
              memory = var.resources.memory_request
            }
            limits = {
              memory = var.resources.memory_limit
            }
          }

          readiness_probe {
            tcp_socket {
              port = "redis"
            }
            period_seconds = 5
          }

          liveness_probe {
            tcp_socket {
              port = "redis"
            }
            initial_delay_seconds = 10
            period_seconds        = 10
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true

            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "data"
            mount_path = "/data"
          }
        }

        volume {
          name = "data"
          empty_dir {}
        }
      }
    }
  }
}

resource "kubernetes_service_v1" "redis" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }

  spec {
    type     = "ClusterIP"
    selector = local.selector

    port {
      name        = "redis"
      port        = 6379
      target_port = "redis"
    }
  }
}

# Only the plane's own pods may talk to Redis (where the cluster's network plugin enforces
# NetworkPolicies).
resource "kubernetes_network_policy_v1" "redis" {
  metadata {
    name      = "${var.name}-clients"
    namespace = var.namespace
    labels    = local.labels
  }

  spec {
    pod_selector {
      match_labels = local.selector
    }

    policy_types = ["Ingress"]

    ingress {
      from {
        pod_selector {
          match_labels = var.client_pod_labels
        }
      }

      ports {
        port     = "6379"
        protocol = "TCP"
      }
    }
  }
}
