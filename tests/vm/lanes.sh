#!/usr/bin/env bash
# qemu lanes: run crest's static test binaries and `crest check --all` inside
# other kernels (Debian 6.1 x86_64, Debian 6.12 arm64, Debian 6.12 x86_64).
#
#   tests/vm/lanes.sh [all|debian61-x86_64|debian612-arm64|debian612-x86_64]...
#
# Runs as root on Debian 12. Installs what it needs with apt-get, fetches the
# kernels with `apt-get download` into $CREST_VM_CACHE (reused between runs),
# builds crest and its tests for the lane's musl target, packs them with a tiny
# init (tests/vm/init.rs) into a cpio newc initramfs, boots it under qemu (TCG)
# with a hard timeout and reads the verdict from the console. Exits non-zero
# when a lane does not boot, times out, or any test binary fails. A lane that
# cannot boot fails; nothing is ever skipped. See tests/vm/README.md.
#
# CREST_VM_MEM sizes the guest (qemu -m, default 2G). CREST_VM_BENCH=NAME[,NAME]
# also builds those benchmarks (`cargo bench --no-run`, benches/NAME.rs) and
# runs each in the guest after the tests, with CREST_BENCH_* and CREST_TRACK
# passed from the host; CREST_VM_TEST_ARGS=--skip-all runs no test at all
# (e.g. CREST_VM_MEM=6G CREST_VM_BENCH=predump CREST_VM_TEST_ARGS=--skip-all
# CREST_VM_TEST_TIMEOUT=3000 CREST_VM_TIMEOUT=3300 tests/vm/lanes.sh debian61-x86_64).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
VMDIR=$REPO/tests/vm
CACHE=${CREST_VM_CACHE:-/var/cache/crest-vm}
OUT=${CREST_VM_OUT:-$REPO/target/vm}
LANE_TIMEOUT=${CREST_VM_TIMEOUT:-600}      # seconds, whole VM, hard
POWEROFF_GRACE=30                          # seconds from DONE to power-off
TEST_TIMEOUT=${CREST_VM_TEST_TIMEOUT:-240} # seconds, each program in the VM
CHECK_MUST_PASS=${CREST_VM_CHECK_MUST_PASS:-0}
VM_MEM=${CREST_VM_MEM:-2G}
BENCHES=${CREST_VM_BENCH:-}
MIRROR=${CREST_VM_MIRROR:-http://deb.debian.org}
# Socket-diag modules and veth (the page-server test joins two network
# namespaces with a veth pair) (=m in Debian): sock_diag lookups autoload them on a
# normal system, but nothing can autoload here. Dependencies first.
MODULES=${CREST_VM_MODULES:-inet_diag tcp_diag udp_diag raw_diag unix_diag netlink_diag af_packet_diag veth}
LAYOUT=2 # of $CACHE/kernels/<lane>; a change makes cached kernels refetch
ALL_LANES=(debian61-x86_64 debian612-arm64 debian612-x86_64)
declare -A APT_UPDATED=()

log() { printf '=== vm: %s\n' "$*" >&2; }
die() { printf 'vm: error: %s\n' "$*" >&2; exit 1; }

# lane -> "debian-arch rust-arch apt-release"; release "" = the default
# candidate (bookworm, bookworm-security or bookworm-updates: newest 6.1).
lane_info() {
	case $1 in
	debian61-x86_64) echo "amd64 x86_64 -" ;;
	debian612-x86_64) echo "amd64 x86_64 bookworm-backports" ;;
	debian612-arm64) echo "arm64 aarch64 bookworm-backports" ;;
	*) die "unknown lane \`$1'; lanes: all ${ALL_LANES[*]}" ;;
	esac
}

install_tools() {
	local need=()
	command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
	command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
	command -v cpio >/dev/null || need+=(cpio)
	command -v jq >/dev/null || need+=(jq)
	command -v timeout >/dev/null || need+=(coreutils)
	command -v xz >/dev/null || need+=(xz-utils)
	if [ ${#need[@]} -gt 0 ]; then
		log "apt-get install ${need[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${need[@]}" >/dev/null
	fi
	if command -v rustup >/dev/null; then
		rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl >/dev/null 2>&1 ||
			die "rustup target add failed"
	fi
}

# A private apt state per Debian architecture, so the host's sources and
# dpkg status stay untouched and arm64 needs no dpkg --add-architecture.
apt_opts() {
	local d=$CACHE/apt-$1
	printf '%s\n' -o "APT::Architecture=$1" -o "APT::Architectures=$1" \
		-o "Dir::State=$d/state" -o "Dir::State::status=$d/state/status" \
		-o "Dir::Cache=$d/cache" -o "Dir::Etc::SourceList=$d/sources.list" \
		-o "Dir::Etc::SourceParts=$d/none" -o "Dir::Etc::Preferences=$d/none/p" \
		-o "Dir::Etc::PreferencesParts=$d/none" -o "APT::Sandbox::User=root" \
		-o "Acquire::Languages=none" -o "Debug::NoLocking=1"
}

apt_setup() {
	local arch=$1 d=$CACHE/apt-$1 key=/usr/share/keyrings/debian-archive-keyring.gpg
	[ -f "$key" ] || die "$key missing: apt-get install debian-archive-keyring"
	mkdir -p "$d/state/lists/partial" "$d/cache/archives/partial" "$d/none"
	touch "$d/state/status"
	{
		for s in bookworm bookworm-updates bookworm-backports; do
			echo "deb [signed-by=$key] $MIRROR/debian $s main"
		done
		echo "deb [signed-by=$key] $MIRROR/debian-security bookworm-security main"
	} >"$d/sources.list"
	mapfile -t o < <(apt_opts "$arch")
	apt-get "${o[@]}" -qq update || die "apt-get update for $arch failed (mirror $MIRROR)"
}

apt_update_once() {
	# Fresh lists once per run: the mirror drops superseded packages.
	if [ -z "${APT_UPDATED[$1]:-}" ]; then
		log "apt-get update ($1, private state in $CACHE/apt-$1)"
		apt_setup "$1"
		APT_UPDATED[$1]=1
	fi
}

# Puts the lane's kernel in $CACHE/kernels/<lane>/: vmlinuz, config-<release>
# (Debian kernels have no /proc/config.gz) and the $MODULES it has as modules
# (uncompressed, list in load order in modules/list). Reused while present;
# CREST_VM_REFRESH=1 fetches the newest again.
fetch_kernel() {
	local lane=$1 arch=$2 rel=$3 dir=$CACHE/kernels/$1 m f
	if [ "$(cat "$dir/layout" 2>/dev/null)" = "$LAYOUT $MODULES" ] &&
		[ "${CREST_VM_REFRESH:-0}" != 1 ]; then
		return
	fi
	apt_update_once "$arch"
	mapfile -t o < <(apt_opts "$arch")
	local meta=linux-image-$arch pkg pats=('./boot/vmlinuz-*' './boot/config-*')
	[ "$rel" = - ] || meta=$meta/$rel
	pkg=$(apt-cache "${o[@]}" depends "$meta" | awk '/Depends: linux-image-/ {print $2; exit}')
	[ -n "$pkg" ] || die "cannot resolve the kernel package behind $meta"
	log "$lane: apt-get download $pkg"
	rm -rf "$dir" && mkdir -p "$dir/x" "$dir/modules"
	(cd "$dir" && apt-get "${o[@]}" -qq download "$pkg") || die "apt-get download $pkg failed"
	for m in $MODULES; do pats+=("./lib/modules/*/$m.ko*"); done
	# tar exits 2 for a module that is built in (no file): vmlinuz decides.
	dpkg-deb --fsys-tarfile "$dir"/*.deb | tar -C "$dir/x" -x --wildcards "${pats[@]}" 2>/dev/null || true
	mv "$dir"/x/boot/vmlinuz-* "$dir/vmlinuz" || die "no vmlinuz in $pkg"
	mv "$dir"/x/boot/config-* "$dir/" || die "no config in $pkg"
	for m in $MODULES; do
		f=$(find "$dir/x" -name "$m.ko*" | head -n1)
		[ -n "$f" ] || continue
		case $f in
		*.xz) xz -dc "$f" >"$dir/modules/$m.ko" ;;
		*) mv "$f" "$dir/modules/$m.ko" ;;
		esac
		echo "$m" >>"$dir/modules/list"
	done
	touch "$dir/modules/list"
	echo "$pkg" >"$dir/package"
	rm -rf "$dir/x" "$dir"/*.deb
	echo "$LAYOUT $MODULES" >"$dir/layout"
}

# busybox-static of the lane's architecture, for the programs tests spawn
# (sleep, sh, cat...); cached in $CACHE/busybox-<arch>/busybox.
fetch_busybox() {
	local arch=$1 dir=$CACHE/busybox-$1
	if [ -s "$dir/busybox" ] && [ "${CREST_VM_REFRESH:-0}" != 1 ]; then
		return
	fi
	apt_update_once "$arch"
	mapfile -t o < <(apt_opts "$arch")
	log "apt-get download busybox-static ($arch)"
	rm -rf "$dir" && mkdir -p "$dir/x"
	(cd "$dir" && apt-get "${o[@]}" -qq download busybox-static) || die "apt-get download busybox-static failed"
	dpkg-deb -x "$dir"/*.deb "$dir/x"
	mv "$dir/x/bin/busybox" "$dir/busybox" || die "no bin/busybox in busybox-static"
	rm -rf "$dir/x" "$dir"/*.deb
}

# Builds crest and the test binaries for one target; writes $OUT/<triple>.list
# with lines "role<TAB>name<TAB>path" (crest first). Integration tests find
# crest through env!("CARGO_BIN_EXE_crest"), an absolute path under target/,
# so the initramfs keeps every binary at its host path.
build_target() {
	local triple=$1 list=$OUT/$1.list json=$OUT/$1.json
	log "build $triple (cargo build/test --release --no-run)"
	(cd "$REPO" && cargo build --release --target "$triple" -q) || die "cargo build for $triple failed"
	if [ "${CREST_VM_TEST_ARGS:-}" = --skip-all ]; then
		: >"$json"
	else
		(cd "$REPO" && cargo test --release --target "$triple" --no-run --message-format=json -q) >"$json" ||
			die "cargo test --no-run for $triple failed"
	fi
	local b
	for b in ${BENCHES//,/ }; do
		log "build $triple bench $b (cargo bench --no-run)"
		(cd "$REPO" && cargo bench --target "$triple" --no-run --bench "$b" --message-format=json -q) >>"$json" ||
			die "cargo bench --no-run --bench $b for $triple failed"
	done
	# Roles: "crest" (runs `check --all`), "test" (a libtest binary, run),
	# "bin" (another [[bin]], e.g. a test victim found through
	# CARGO_BIN_EXE_<name>: copied, not run). Examples are left out.
	jq -r 'select(.reason=="compiler-artifact" and .executable != null)
		| .target as $t
		| if ($t.kind|index("bench")) then ["bench", "bench-" + $t.name, .executable]
		  elif .profile.test then
			["test", (if ($t.kind|index("lib")) then "lib"
				elif ($t.kind|index("bin")) then "bin-" + $t.name
				else "test-" + $t.name end), .executable]
		  elif ($t.kind|index("bin")) then
			[(if $t.name == "crest" then "crest" else "bin" end), $t.name, .executable]
		  else empty end | @tsv' "$json" | sort -u >"$list.tmp"
	[ "$(grep -c '^crest	' "$list.tmp")" = 1 ] || die "no single crest binary in the $triple build"
	{ grep '^crest	' "$list.tmp"; grep -v '^crest	' "$list.tmp"; } >"$list"
	rm -f "$list.tmp"
	rustc --edition 2024 -O --target "$triple" -C strip=symbols \
		$([ "$triple" = aarch64-unknown-linux-musl ] && echo -C linker=rust-lld) \
		"$VMDIR/init.rs" -o "$OUT/init-$triple" || die "building tests/vm/init.rs for $triple failed"
}

make_initramfs() {
	local lane=$1 triple=$2 arch=$3 root=$OUT/$1/root role name path
	rm -rf "$root" && mkdir -p "$root"/{proc,sys,dev,tmp,root,vm,bin,usr/bin} "$root$REPO"
	mknod -m 600 "$root/dev/console" c 5 1
	mknod -m 666 "$root/dev/null" c 1 3
	install -m 755 "$OUT/init-$triple" "$root/init"
	install -m 755 "$CACHE/busybox-$arch/busybox" "$root/bin/busybox"
	local kdir=$CACHE/kernels/$lane
	mkdir -p "$root/boot" "$root/vm/modules"
	# /boot/config-<release>, where Debian keeps it: these kernels have no
	# /proc/config.gz.
	cp "$kdir"/config-* "$root/boot/"
	cp "$kdir"/modules/*.ko "$root/vm/modules/" 2>/dev/null || true
	# The source tree too (about 200 KB): tests may read files relative to
	# CARGO_MANIFEST_DIR at run time (docs/CLI.md, samples).
	if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
		(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
			while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
			cpio --null -pdm --quiet "$root$REPO") || die "copying the source tree into the initramfs failed"
	else
		log "$REPO is not a git checkout: the initramfs gets no source files"
	fi
	local extra=${CREST_VM_TEST_ARGS:-}
	{
		printf 'env\t%s\t%s\n' PATH /usr/bin:/bin HOME /root TMPDIR /tmp RUST_BACKTRACE 1 \
			CARGO_MANIFEST_DIR "$REPO" CREST_VM_LANE "$lane"
		local v
		for v in $(compgen -e | grep -E '^(CREST_BENCH_[A-Z_]+|CREST_TRACK)$' || true); do
			printf 'env\t%s\t%s\n' "$v" "${!v}"
		done
		printf 'cwd\t%s\n' "$REPO"
		while read -r m; do printf 'insmod\t/vm/modules/%s.ko\n' "$m"; done <"$kdir/modules/list"
		printf 'prep\t30\t/bin/busybox\t--install\t-s\t/bin\n'
		# A tmpfs on /tmp would hide a checkout under /tmp; the initramfs's
		# own /tmp (in the tmpfs root) serves then.
		case $REPO/ in /tmp/*) ;; *) printf 'tmpfs\t/tmp\n' ;; esac
		while IFS=$'\t' read -r role name path; do
			mkdir -p "$root$(dirname "$path")"
			cp "$path" "$root$path"
			if [ "$role" = crest ]; then
				printf 'run\tcheck\t%s\t%s\tcheck\t--all\n' "$TEST_TIMEOUT" "$path"
			elif [ "$role" = bench ]; then
				printf 'run\t%s\t%s\t%s\n' "$name" "$TEST_TIMEOUT" "$path"
			elif [ "$role" = test ] && [ "$extra" != --skip-all ]; then
				# shellcheck disable=SC2086 # extra args split on purpose
				printf 'run\t%s\t%s\t%s\t--test-threads=1%s\n' "$name" "$TEST_TIMEOUT" "$path" \
					"$(for a in $extra; do printf '\t%s' "$a"; done)"
			fi
		done <"$OUT/$triple.list"
	} >"$root/vm/plan"
	(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) >"$OUT/$lane/initramfs.cpio"
}

# Runs qemu until it exits, the hard timeout fires, or the guest has printed
# DONE and still not powered off POWEROFF_GRACE seconds later (every verdict
# is on the console by then; once seen, a 6.12 arm64 guest that had passed
# its whole plan sat until the timeout). Returns qemu's status; a stop after
# DONE leaves $OUT/<lane>/poweroff-hung for the report.
run_qemu() {
	local lane=$1 console=$2 pid done_at=''
	shift 2
	rm -f "$OUT/$lane/poweroff-hung"
	timeout -k 5 "$LANE_TIMEOUT" "$@" </dev/null >"$console" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		if [ -z "$done_at" ] && grep -aq '@@CREST-VM DONE' "$console"; then
			done_at=$SECONDS
		elif [ -n "$done_at" ] && [ $((SECONDS - done_at)) -ge "$POWEROFF_GRACE" ]; then
			echo "$POWEROFF_GRACE" >"$OUT/$lane/poweroff-hung"
			kill "$pid" # timeout passes SIGTERM on to qemu
			break
		fi
	done
	wait "$pid"
}

boot() {
	local lane=$1 arch=$2 kernel=$3 img=$OUT/$1/initramfs.cpio console=$OUT/$1/console.log
	local q
	if [ "$arch" = arm64 ]; then
		# pauth-impdef: QEMU's own pointer-auth hash, far faster under TCG
		# than the architected QARMA; the guest sees the same features.
		q=(qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on
			-append "console=ttyAMA0 panic=-1 quiet")
	else
		q=(qemu-system-x86_64 -cpu max -append "console=ttyS0 panic=-1 quiet")
	fi
	q+=(-m "$VM_MEM" -smp 2 -nographic -no-reboot -nic none -kernel "$kernel" -initrd "$img")
	local t rc attempt
	rm -f "$OUT/$lane/boot-retries"
	# A guest kernel that panics before it starts /init never ran crest: TCG
	# does not always keep the vCPUs' code coherent while the kernel patches
	# itself (seen: an int3 oops in sched_clock_cpu at 2.8 s of a 6.12
	# boot). Such a boot is retried, and the retry is reported.
	for attempt in 1 2 3; do
		log "$lane: boot $(cat "$CACHE/kernels/$lane/package") (timeout ${LANE_TIMEOUT}s, attempt $attempt)"
		t=$SECONDS
		set +e
		run_qemu "$lane" "$console" "${q[@]}"
		rc=$?
		set -e
		tr -d '\r' <"$console" >"$console.txt"
		log "$lane: qemu ran $((SECONDS - t))s (exit status $rc)"
		grep -aq '@@CREST-VM KERNEL' "$console.txt" && break
		# Only a kernel that panicked (panic=-1 and -no-reboot end qemu)
		# is retried; a hang until the timeout is not.
		{ [ "$rc" = 0 ] && [ "$attempt" != 3 ]; } || break
		cp "$console.txt" "$OUT/$lane/console.boot$attempt.txt"
		echo "boot $attempt: the kernel did not start /init; console tail:" >>"$OUT/$lane/boot-retries"
		tail -n 8 "$console.txt" | sed 's/^/    | /' >>"$OUT/$lane/boot-retries"
	done
	echo "$rc" >"$OUT/$lane/qemu.rc"
}

# Reads the console log; prints the lane summary; returns 1 when the lane fails.
report() {
	local lane=$1 log=$OUT/$1/console.log.txt rc fail=0 name
	rc=$(cat "$OUT/$lane/qemu.rc")
	echo
	echo "---- lane $lane: $(grep -ao '@@CREST-VM KERNEL .*' "$log" | cut -d' ' -f3- || echo 'kernel never reached /init')"
	if [ -s "$OUT/$lane/boot-retries" ]; then
		echo "  NOTE: boot retried (the guest kernel died before /init, crest never ran):"
		sed 's/^/  /' "$OUT/$lane/boot-retries"
	fi
	if [ -s "$OUT/$lane/poweroff-hung" ]; then
		echo "  NOTE: every program had ended (DONE) but the guest did not power off in" \
			"${POWEROFF_GRACE}s; qemu was stopped. Console after DONE:"
		awk 'on{print} index($0,"@@CREST-VM DONE"){on=1}' "$log" | tail -n 25 | sed 's/^/    | /'
	elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "  FAIL: timed out after ${LANE_TIMEOUT}s (qemu killed)"
		fail=1
	elif [ "$rc" != 0 ]; then
		echo "  FAIL: qemu exited with status $rc"
		fail=1
	fi
	if ! grep -aq '@@CREST-VM KERNEL' "$log"; then
		echo "  FAIL: the kernel did not start /init; console tail:"
		tail -n 25 "$log" | sed 's/^/    | /'
		return 1
	fi
	grep -aoE '@@CREST-VM (NOTE|LEFT) .*' "$log" | sed 's/^@@CREST-VM /  /' || true
	while IFS=$'\t' read -r _ name _; do
		report_one "$lane" "$name" "$log" || fail=1
	done < <(grep -P '^run\t' "$OUT/$lane/root/vm/plan")
	if ! grep -aq '@@CREST-VM DONE' "$log"; then
		echo "  FAIL: the plan did not finish (hang, crash or timeout); console tail:"
		tail -n 25 "$log" | sed 's/^/    | /'
		fail=1
	else
		echo "  plan done at $(grep -ao -m1 '@@CREST-VM DONE .*' "$log" | cut -d' ' -f3-)"
	fi
	return $fail
}

# Prints one program's verdict; for failures the failing tests and the output.
report_one() {
	local lane=$1 name=$2 log=$3 end body verdict
	end=$(grep -ao -m1 "@@CREST-VM END $name .*" "$log" | cut -d' ' -f4-)
	body=$(awk -v b="@@CREST-VM BEGIN $name" -v e="@@CREST-VM END $name " \
		'index($0,e){exit} on{print} index($0,b){on=1}' "$log")
	if [ "$name" = check ]; then
		echo "  check: ${end:-did not end}"
		if [ -n "${body//[$'\n ']/}" ]; then
			printf '%s\n' "$body" | sed '/^$/d; s/^/    | /'
		else
			echo "    | (no output)"
		fi
		case $end in
		exit=0*) return 0 ;;
		exit=1\ *) [ "$CHECK_MUST_PASS" = 1 ] && return 1 || return 0 ;;
		*) return 1 ;;
		esac
	fi
	case $name in bench-*)
		echo "  $name: ${end:-did not end}"
		printf '%s\n' "$body" | sed '/^$/d; s/^/    | /'
		case $end in exit=0\ *) return 0 ;; *) return 1 ;; esac
		;;
	esac
	local n_ok n_fail n_ign
	n_ok=$(printf '%s\n' "$body" | grep -ac '^test .* \.\.\. ok$' || true)
	n_fail=$(printf '%s\n' "$body" | grep -ac '^test .* \.\.\. FAILED$' || true)
	n_ign=$(printf '%s\n' "$body" | grep -ac '^test .* \.\.\. ignored' || true)
	case $end in exit=0\ *) verdict=pass ;; *) verdict=FAIL ;; esac
	printf '  %-4s %-28s %s  (%s passed, %s failed, %s ignored)\n' "$verdict" "$name" \
		"${end:-did not end}" "$n_ok" "$n_fail" "$n_ign"
	[ "$verdict" = pass ] && return 0
	printf '%s\n' "$body" | grep -a '^test .* \.\.\. FAILED$' | sed 's/^/       /' || true
	printf '%s\n' "$body" | tail -n 60 | sed 's/^/       | /'
	return 1
}

main() {
	local lanes=() lane
	[ "$(id -u)" = 0 ] || die "run as root (apt-get, mknod)"
	for a in "${@:-all}"; do
		case $a in
		all) lanes+=("${ALL_LANES[@]}") ;;
		-h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) lane_info "$a" >/dev/null && lanes+=("$a") ;;
		esac
	done
	mkdir -p "$CACHE" "$OUT"
	local t0=$SECONDS t
	install_tools
	declare -A built=() took=() verdict=()
	local failed=0
	for lane in "${lanes[@]}"; do
		read -r arch rarch rel < <(lane_info "$lane")
		local triple=$rarch-unknown-linux-musl
		t=$SECONDS
		if [ -z "${built[$triple]:-}" ]; then
			build_target "$triple"
			built[$triple]=1
			log "build $triple took $((SECONDS - t))s"
			t=$SECONDS
		fi
		fetch_kernel "$lane" "$arch" "$rel"
		fetch_busybox "$arch"
		mkdir -p "$OUT/$lane"
		make_initramfs "$lane" "$triple" "$arch"
		boot "$lane" "$arch" "$CACHE/kernels/$lane/vmlinuz"
		if report "$lane"; then verdict[$lane]=pass; else verdict[$lane]=FAIL failed=1; fi
		took[$lane]=$((SECONDS - t))
	done
	echo
	echo "==== qemu lanes (console logs in $OUT/<lane>/console.log.txt)"
	for lane in "${lanes[@]}"; do
		printf '  %-4s %-18s %4ss  %s\n' "${verdict[$lane]}" "$lane" "${took[$lane]}" \
			"$(cat "$CACHE/kernels/$lane/package")"
	done
	echo "  total $((SECONDS - t0))s"
	return $failed
}

main "$@"
