#!/usr/bin/env bash
# Runs the fake RouterOS (target/debug/fake-routeros) behind a real OpenSSH server on
# 127.0.0.1:${PORT:-2222}, and prints the backend configuration that points modcsi at it.
# State, keys and the disks' sparse files live in ${DIR:-/tmp/modcsi-fake-rds}. Ctrl-C stops it.
set -euo pipefail
fake=$1
dir=${DIR:-/tmp/modcsi-fake-rds}
port=${PORT:-2222}
mkdir -p "$dir/state" /run/sshd
[ -f "$dir/host_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$dir/host_key"
[ -f "$dir/client_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$dir/client_key"
echo "command=\"$(realpath "$fake") --state $dir/state\",no-pty,no-port-forwarding $(cat "$dir/client_key.pub")" \
    > "$dir/authorized_keys"
echo "[127.0.0.1]:$port $(cat "$dir/host_key.pub")" > "$dir/known_hosts"
cat > "$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
CONF
cat > "$dir/backend.toml" <<CONF
[rds]
nvme-address = "127.0.0.1"

[ssh.targets.rds]
address = "127.0.0.1"
port = $port
user = "root"
key = { secret-file = "$dir/client_key" }
known-hosts = "$dir/known_hosts"
CONF
echo "fake RDS on 127.0.0.1:$port; state in $dir/state"
echo "point the host at it: modcsi serve --backend backends/target/wasm32-wasip2/release/rds.wasm --backend-config $dir/backend.toml ..."
echo "or talk to it: ssh -i $dir/client_key -o UserKnownHostsFile=$dir/known_hosts -p $port root@127.0.0.1 '/disk print detail'"
exec /usr/sbin/sshd -D -e -f "$dir/sshd_config"
