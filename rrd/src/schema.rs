//! The C daemon's RRD files (spec/status.md §4.1): step 60 s, start today
//! 00:00 local time, every data source with heartbeat 120, min 0, max
//! unknown; AVERAGE and MAX archives of a day of minutes, 30 days of 30
//! minutes, a year of 6 hours and ten years of weeks.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rrd::ConsolidationFn;
use rrd::ops::create::{self, Archive, DataSource, DataSourceName};

use crate::key::Kind;

const STEP: Duration = Duration::from_secs(60);
const HEARTBEAT: u32 = 120;

/// `true` = DERIVE, `false` = GAUGE.
const NODE: [(&str, bool); 19] = [
    ("loadavg", false),
    ("maxcpu", false),
    ("cpu", false),
    ("iowait", false),
    ("memtotal", false),
    ("memused", false),
    ("swaptotal", false),
    ("swapused", false),
    ("roottotal", false),
    ("rootused", false),
    ("netin", true),
    ("netout", true),
    ("memavailable", false),
    ("arcsize", false),
    ("pressurecpusome", false),
    ("pressureiosome", false),
    ("pressureiofull", false),
    ("pressurememorysome", false),
    ("pressurememoryfull", false),
];

const GUEST: [(&str, bool); 17] = [
    ("maxcpu", false),
    ("cpu", false),
    ("maxmem", false),
    ("mem", false),
    ("maxdisk", false),
    ("disk", false),
    ("netin", true),
    ("netout", true),
    ("diskread", true),
    ("diskwrite", true),
    ("memhost", false),
    ("pressurecpusome", false),
    ("pressurecpufull", false),
    ("pressureiosome", false),
    ("pressureiofull", false),
    ("pressurememorysome", false),
    ("pressurememoryfull", false),
];

const STORAGE: [(&str, bool); 2] = [("total", false), ("used", false)];

/// (steps, rows) of the archives, each as AVERAGE and as MAX.
const ARCHIVES: [(u32, u32); 4] = [(1, 1440), (30, 1440), (360, 1440), (10080, 570)];

/// The data sources of a kind, in file order.
pub fn data_sources(kind: Kind) -> &'static [(&'static str, bool)] {
    match kind {
        Kind::Node => &NODE,
        Kind::Guest => &GUEST,
        Kind::Storage => &STORAGE,
    }
}

/// Creates `path` (which must not exist) for `kind`.
pub fn create(path: &Path, kind: Kind) -> Result<(), rrd::error::RrdError> {
    let mut sources = Vec::with_capacity(data_sources(kind).len());
    for (name, derive) in data_sources(kind) {
        let name = DataSourceName::new(*name)
            .map_err(|error| rrd::error::RrdError::InvalidArgument(error.to_string()))?;
        sources.push(if *derive {
            DataSource::derive(&name, HEARTBEAT, Some(0), None)
        } else {
            DataSource::gauge(&name, HEARTBEAT, Some(0.0), None)
        });
    }
    let mut archives = Vec::with_capacity(2 * ARCHIVES.len());
    for function in [ConsolidationFn::Avg, ConsolidationFn::Max] {
        for (steps, rows) in ARCHIVES {
            archives.push(
                Archive::new(function, 0.5, steps, rows)
                    .map_err(|error| rrd::error::RrdError::InvalidArgument(error.to_string()))?,
            );
        }
    }
    create::create(
        path,
        start_of_today(),
        STEP,
        true,
        None,
        &[],
        &sources,
        &archives,
    )
}

/// Today 00:00:00 in local time.
fn start_of_today() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let seconds = libc::time_t::try_from(now).unwrap_or(0);
    // SAFETY: localtime_r writes only into `tm`, which we own; a zeroed tm
    // is a valid value of the type.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let offset = if unsafe { libc::localtime_r(&seconds, &mut tm) }.is_null() {
        0
    } else {
        tm.tm_gmtoff
    };
    let local = seconds.saturating_add(offset);
    let midnight = local - local.rem_euclid(86_400) - offset;
    UNIX_EPOCH + Duration::from_secs(u64::try_from(midnight).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_of_today_is_at_most_a_day_ago() {
        let now = SystemTime::now();
        let start = start_of_today();
        let age = now.duration_since(start).expect("in the past");
        assert!(age < Duration::from_secs(86_400), "{age:?}");
    }

    #[test]
    fn created_files_have_the_c_layout() {
        let dir = tempfile::tempdir().expect("temp dir");
        for kind in [Kind::Node, Kind::Guest, Kind::Storage] {
            let path = dir.path().join(kind.dir());
            create(&path, kind).expect("create");
            let info = rrd::ops::info::info(&path).expect("info");
            let get = |key: &str| info.get(key).map(|value| format!("{value:?}"));
            assert_eq!(
                info.get("step").cloned().and_then(|v| v.into_count()),
                Some(60)
            );
            for (name, derive) in data_sources(kind) {
                let kind_key = format!("ds[{name}].type");
                let expected = if *derive { "DERIVE" } else { "GAUGE" };
                assert!(
                    get(&kind_key).is_some_and(|t| t.contains(expected)),
                    "{kind_key}: {:?}",
                    get(&kind_key)
                );
                assert_eq!(
                    info.get(&format!("ds[{name}].minimal_heartbeat"))
                        .cloned()
                        .and_then(|v| v.into_count()),
                    Some(120)
                );
            }
            let dss = info.keys().filter(|k| k.ends_with("].type")).count();
            assert_eq!(dss, kind.columns());
            for (index, (steps, rows)) in ARCHIVES.iter().chain(ARCHIVES.iter()).enumerate() {
                assert_eq!(
                    info.get(&format!("rra[{index}].pdp_per_row"))
                        .cloned()
                        .and_then(|v| v.into_count()),
                    Some(u64::from(*steps))
                );
                assert_eq!(
                    info.get(&format!("rra[{index}].rows"))
                        .cloned()
                        .and_then(|v| v.into_count()),
                    Some(u64::from(*rows))
                );
            }
            // no_overwrite: a second create fails instead of replacing.
            assert!(create(&path, kind).is_err());
        }
    }
}
