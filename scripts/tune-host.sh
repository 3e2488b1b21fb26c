#!/usr/bin/env bash
# tune-host.sh — kernel and limit settings for runs with hundreds of thousands of connections
# (chatbench agents, servers and cluster nodes alike). Each setting is printed with why it
# matters; nothing is persisted. Run as root; `--dry-run` only prints what it would do.
#
#   scripts/tune-host.sh --dry-run          # show the plan
#   sudo scripts/tune-host.sh               # apply until the next reboot
#   sudo scripts/tune-host.sh --connections 1000000
#
# To keep the settings, copy the printed `sysctl` lines into /etc/sysctl.d/90-chatbench.conf
# and the descriptor limit into a systemd unit (LimitNOFILE=) or /etc/security/limits.d/.
set -euo pipefail

dry_run=0
connections=500000
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --connections) connections="${2:?--connections needs a number}"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$connections" in ''|*[!0-9]*) echo "error: --connections must be a whole number" >&2; exit 2 ;; esac

if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "error: changing kernel settings needs root; run with sudo, or --dry-run to only print" >&2
  exit 2
fi

# Both ends of a loopback connection are sockets on this host: size for two per connection.
sockets=$((connections * 2))
mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
page_kib=$(( $(getconf PAGESIZE) / 1024 ))
mem_pages=$((mem_kib / page_kib))

setting() { # key value reason
  local key="$1" value="$2" why="$3" file="/proc/sys/${1//.//}"
  echo "# $why"
  if [ ! -e "$file" ]; then
    echo "#   ($key is not available on this kernel: skipped)"
    return
  fi
  local now
  now=$(tr '\t' ' ' <"$file" | tr -s ' ')
  echo "#   now: $key = $now"
  # Never lower a limit: compare the last number (the maximum, for triples like tcp_mem).
  local now_last="${now##* }" want_last="${value##* }"
  if [ "$key" != net.ipv4.ip_local_port_range ] && [ "$key" != net.ipv4.tcp_tw_reuse ] \
     && [ "$now_last" -ge "$want_last" ] 2>/dev/null; then
    echo "#   already at least $want_last: left as it is"
    echo
    return
  fi
  echo "sysctl -w $key=\"$value\""
  if [ "$dry_run" = 0 ]; then
    sysctl -q -w "$key=$value" || echo "warning: could not set $key" >&2
  fi
  echo
}

echo "# chatbench host tuning for $connections connections ($sockets sockets on one host at most)"
echo

setting fs.nr_open $((sockets + 100000)) \
  "Per-process descriptor ceiling: RLIMIT_NOFILE cannot be raised above it. One socket = one descriptor."
setting fs.file-max $((sockets * 2 + 200000)) \
  "System-wide descriptor limit: every socket of every process on the host counts."
setting net.ipv4.ip_local_port_range "10000 65535" \
  "Ephemeral ports per (source address, destination): ~55k instead of ~28k (ports below 10000 stay free for services). chatbench also spreads loopback clients over 127.x source addresses."
setting net.ipv4.tcp_tw_reuse 1 \
  "Reuse TIME_WAIT ports for new outgoing connections on every interface (the default 2 means loopback only), so back-to-back runs do not run out of ports."
setting net.core.somaxconn 65535 \
  "Largest accept backlog a listener may ask for: connection storms overflow a short queue (dropped SYNs, 1 s retransmits). chatbench servers ask for a large backlog."
setting net.ipv4.tcp_max_syn_backlog 65535 \
  "Half-open connections queued per listener during a connection storm."
setting net.core.netdev_max_backlog 65535 \
  "Packets queued per CPU before the stack processes them: bursts of fan-out on fast links."
# tcp_mem is in pages: (no pressure, pressure, hard limit). Let TCP buffers use up to half of RAM
# before the kernel refuses memory, with pressure from a quarter.
setting net.ipv4.tcp_mem "$((mem_pages / 8)) $((mem_pages / 4)) $((mem_pages / 2))" \
  "TCP buffer memory for all sockets, in pages (low, pressure, max): the default is sized for a few thousand busy sockets; past 'max' the kernel drops data and sockets stall."
setting net.ipv4.tcp_rmem "4096 16384 4194304" \
  "Per-socket receive buffer (min, default, max): a small default keeps idle sockets cheap."
setting net.ipv4.tcp_wmem "4096 16384 4194304" \
  "Per-socket send buffer (min, default, max)."
setting net.netfilter.nf_conntrack_max $((sockets + 100000)) \
  "Connection tracking table (only when the conntrack module is loaded, e.g. by a firewall): when full, new connections are dropped ('nf_conntrack: table full' in dmesg)."
setting vm.max_map_count 262144 \
  "Memory mappings per process: thread-per-connection servers (thread-pool) hit the default 65,530 at ~15k threads before they run out of memory."

echo "# Per-process descriptor limit for the shell that starts chatbench (not changed here):"
echo "#   now: soft $(ulimit -Sn), hard $(ulimit -Hn)"
echo "ulimit -n $((sockets + 1000))   # or LimitNOFILE= in a systemd unit; chatbench raises soft to hard itself"
if [ "$dry_run" = 1 ]; then
  echo
  echo "# dry run: nothing was changed"
fi
