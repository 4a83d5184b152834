# What the root module and the operators need: how to reach the cluster (the example
# configures the kubernetes and helm providers from these), where the stores are, and the
# backup storage and identity. No output carries a password or access key.

output "cluster_name" {
  description = "AKS cluster name."
  value       = azurerm_kubernetes_cluster.this.name
}

output "resource_group_name" {
  description = "Resource group of the deployment."
  value       = azurerm_resource_group.this.name
}

output "cluster_endpoint" {
  description = "Private HTTPS endpoint of the Kubernetes API."
  value       = "https://${azurerm_kubernetes_cluster.this.private_fqdn}:443"
}

output "cluster_ca_certificate" {
  description = "Base64-encoded CA certificate of the Kubernetes API."
  value       = azurerm_kubernetes_cluster.this.kube_config[0].cluster_ca_certificate
  sensitive   = true
}

output "kubeconfig_command" {
  description = "Commands that write a kubeconfig entry for the cluster (Entra ID login through kubelogin)."
  value       = "az aks get-credentials --resource-group ${azurerm_resource_group.this.name} --name ${azurerm_kubernetes_cluster.this.name} && kubelogin convert-kubeconfig -l azurecli"
}

output "oidc_issuer_url" {
  description = "OIDC issuer of the cluster, for further workload identities."
  value       = azurerm_kubernetes_cluster.this.oidc_issuer_url
}

output "database_host" {
  description = "FQDN of the PostgreSQL Flexible Server (resolves to its private endpoint inside the VNet)."
  value       = azurerm_postgresql_flexible_server.this.fqdn
}

output "redis_host" {
  description = "Host name of Azure Cache for Redis (resolves to its private endpoint inside the VNet)."
  value       = azurerm_redis_cache.this.hostname
}

output "redis_port" {
  description = "TLS port of Azure Cache for Redis."
  value       = azurerm_redis_cache.this.ssl_port
}

output "backup_bucket" {
  description = "Backup container as <storage account>/<container>."
  value       = "${azurerm_storage_account.backups.name}/${azurerm_storage_container.backups.name}"
}

output "backup_identity_client_id" {
  description = "Client ID of the managed identity the backup ServiceAccount federates with."
  value       = azurerm_user_assigned_identity.backup.client_id
}

output "backup_service_account" {
  description = "Namespace/name of the Kubernetes ServiceAccount allowed to use the backup storage."
  value       = "${var.namespace}/${var.backup_service_account}"
}

output "key_vault_id" {
  description = "Key Vault holding the customer-managed key."
  value       = azurerm_key_vault.this.id
}

output "vnet_id" {
  description = "Virtual network of the deployment (peer it to reach the internal edge)."
  value       = azurerm_virtual_network.this.id
}

output "milvus_uri" {
  description = "Milvus endpoint HACS uses (in-cluster release or Zilliz Cloud)."
  value       = local.milvus_uri
}

output "namespace" {
  description = "Kubernetes namespace of the HACS release."
  value       = kubernetes_namespace_v1.hacs.metadata[0].name
}
