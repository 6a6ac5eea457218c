# tflint configuration for every Terraform root and module under terraform/ (run by
# scripts/terraform-check.sh). The bundled `terraform` ruleset, all rules: typed and documented
# variables and outputs, pinned provider versions, standard module structure, no unused
# declarations, naming conventions.
config {
  # Follow calls to local modules, so the example's module arguments are checked too.
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}
