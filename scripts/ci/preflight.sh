#!/usr/bin/env bash
# Before measuring on a Raspberry Pi: fail when it is throttled or under-voltage now (vcgencmd get_throttled,
# mask 0xF) or at/above MAX_START_TEMP_C (60) degrees; warn about throttling since boot (0xF0000), a governor
# other than performance, a busy machine (load average > 1). THERMAL_FILE overrides the SoC's thermal zone.
# Outputs: throttled, temp_c.
set -euo pipefail
. "$(dirname "$0")/common.sh"

MAX_START_TEMP_C=${MAX_START_TEMP_C:-60}
if command -v vcgencmd >/dev/null 2>&1; then
    reply=$(vcgencmd get_throttled)                 # e.g. throttled=0x0
    echo "$reply"
    flags=$(( ${reply#throttled=} ))
    if (( flags & 0xF )); then
        ci_error "the Pi is throttled or under-voltage right now ($reply): fix the power supply/cooling first"
        exit 1
    fi
    if (( flags & 0xF0000 )); then
        ci_warning "throttling or under-voltage happened since boot ($reply); results may be affected"
    fi
    ci_output throttled "${reply#throttled=}"
else
    ci_warning "vcgencmd not found: cannot check throttling"
fi
zone=${THERMAL_FILE:-/sys/class/thermal/thermal_zone0/temp}
if [ -r "$zone" ]; then
    temp=$(( $(cat "$zone") / 1000 ))
    echo "SoC temperature: ${temp} C (limit ${MAX_START_TEMP_C} C)"
    if (( temp >= MAX_START_TEMP_C )); then
        ci_error "the Pi is too hot to benchmark (${temp} C >= ${MAX_START_TEMP_C} C): check the fan/heatsink"
        exit 1
    fi
    ci_output temp_c "$temp"
else
    ci_warning "no thermal zone at $zone: cannot check the temperature"
fi
for gov in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
    [ -e "$gov" ] || continue
    if [ "$(cat "$gov")" != performance ]; then
        ci_warning "$gov is $(cat "$gov"), not performance (see docs/pi4-runner.md)"
    fi
done
read -r load1 _ < /proc/loadavg
echo "load average: $load1"
if awk -v l="$load1" 'BEGIN { exit !(l > 1.0) }'; then
    ci_warning "load average $load1 > 1 on an idle runner: another process is busy; results may drift"
fi
