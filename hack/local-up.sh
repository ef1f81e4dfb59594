#!/usr/bin/env bash
# Starts Bulwark's kube-apiserver on https://127.0.0.1:6443 with an embedded
# etcd, the flags a kubeadm control plane uses, and everything it needs under
# _output/local/. Data, certificates and the kubeconfig survive restarts.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${BULWARK_LOCAL_DIR:-_output/local}
port=${BULWARK_LOCAL_PORT:-6443}
bin=${KUBE_APISERVER:-_output/bin/kube-apiserver}
pki=$out/pki

mkdir -p "$out"
go run ./hack/local-pki -dir "$pki" -kubeconfig "$out/admin.kubeconfig" -server "https://127.0.0.1:$port"

cat <<MSG
Bulwark kube-apiserver starting on https://127.0.0.1:$port (embedded etcd data, unless --etcd-servers is given: $out/etcd).
In another shell:
  kubectl --kubeconfig $out/admin.kubeconfig get ns
MSG

exec "$bin" \
  --embedded-etcd-data-dir="$out/etcd" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --secure-port="$port" \
  --allow-privileged=true \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --enable-bootstrap-token-auth=true \
  --client-ca-file="$pki/ca.crt" \
  --tls-cert-file="$pki/apiserver.crt" \
  --tls-private-key-file="$pki/apiserver.key" \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname \
  --proxy-client-cert-file="$pki/front-proxy-client.crt" \
  --proxy-client-key-file="$pki/front-proxy-client.key" \
  --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-username-headers=X-Remote-User \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  "$@"
