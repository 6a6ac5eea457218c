variable "namespace" {
  description = "Namespace the CloudNativePG operator runs in (created by the chart)."
  type        = string
  default     = "cnpg-system"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "The namespace must be a DNS label."
  }
}

variable "chart_version" {
  description = "Version of the cloudnative-pg operator chart (https://cloudnative-pg.github.io/charts)."
  type        = string
  default     = "0.26.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.chart_version))
    error_message = "Pin an exact chart version (x.y.z)."
  }
}
