output "release" {
  description = "Name and namespace of the operator's Helm release; pass it to depends_on of the planes in the same Kubernetes cluster."
  value = {
    name      = helm_release.cnpg.name
    namespace = helm_release.cnpg.namespace
  }
}
