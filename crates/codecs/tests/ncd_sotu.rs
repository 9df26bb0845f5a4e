//! NCD on real text: the State of the Union addresses (fetched by
//! `scripts/fetch-testdata.sh` into `~/.cache/tensorpress/sotu`).

use std::path::PathBuf;

use tensorpress_codecs::ncd::{ncd_to_target, rank_by_ncd, zipfit_select, Deflate};

struct Address {
    year: u32,
    president: String,
    text: Vec<u8>,
}

fn addresses() -> Vec<Address> {
    let cache = std::env::var_os("TENSORPRESS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tensorpress")))
        .unwrap_or_else(|| PathBuf::from(".cache/tensorpress"));
    let dir = cache.join("sotu");
    assert!(
        dir.is_dir(),
        "test data missing: {} not found; run scripts/fetch-testdata.sh (or set TENSORPRESS_CACHE)",
        dir.display()
    );
    let mut out: Vec<Address> = std::fs::read_dir(&dir)
        .expect("read the sotu folder")
        .filter_map(|e| {
            let path = e.expect("directory entry").path();
            let stem = path.file_stem()?.to_str()?.to_string();
            let parts: Vec<&str> = stem.split('_').collect();
            if path.extension()?.to_str()? != "txt" || parts.len() < 3 {
                return None;
            }
            let mut text = std::fs::read(&path).expect("read an address");
            text.truncate(Deflate::WINDOW / 2);
            Some(Address {
                year: parts[0].parse().ok()?,
                president: parts[1..parts.len() - 1].join(" "),
                text,
            })
        })
        .collect();
    assert!(
        out.len() >= 200,
        "test data incomplete: {} addresses in {}; run scripts/fetch-testdata.sh",
        out.len(),
        dir.display()
    );
    out.sort_by_key(|a| a.year);
    out
}

/// Every address is nearer to itself than to any other.
#[test]
fn an_address_is_nearest_to_itself() {
    let all = addresses();
    let texts: Vec<&[u8]> = all.iter().map(|a| a.text.as_slice()).collect();
    let c = Deflate::default();
    for t in (0..all.len()).step_by(23) {
        let d = ncd_to_target(&c, texts[t], &texts).unwrap();
        let own = d[t];
        for (i, &di) in d.iter().enumerate() {
            if i != t {
                assert!(
                    own < di,
                    "{}: NCD to itself {own} ≥ NCD to {} ({di})",
                    all[t].year,
                    all[i].year
                );
            }
        }
        assert!(own < 0.1, "{}: NCD to itself {own}", all[t].year);
    }
}

/// A president's other addresses rank well above the average address, and
/// the nearest address is one of them.
#[test]
fn same_president_ranks_high() {
    let all = addresses();
    let c = Deflate::default();
    for year in [1936, 1958, 1986, 1998, 2006, 2014] {
        let t = all
            .iter()
            .position(|a| a.year == year)
            .expect("target year present");
        let others: Vec<&Address> = all.iter().filter(|a| a.year != year).collect();
        let texts: Vec<&[u8]> = others.iter().map(|a| a.text.as_slice()).collect();
        let ranked = rank_by_ncd(&c, &all[t].text, &texts).unwrap();
        let own: Vec<usize> = ranked
            .iter()
            .enumerate()
            .filter(|(_, r)| others[r.index].president == all[t].president)
            .map(|(rank, _)| rank)
            .collect();
        assert!(own.len() >= 3, "{year}: only {} other addresses", own.len());
        assert_eq!(
            own[0], 0,
            "{year} {}: the nearest address is {} {}",
            all[t].president, others[ranked[0].index].year, others[ranked[0].index].president
        );
        let mean_rank = own.iter().sum::<usize>() as f64 / own.len() as f64;
        let n = ranked.len() as f64;
        eprintln!("{year} {}: own ranks {own:?} of {n}", all[t].president);
        assert!(
            mean_rank < RANK_FRACTION * n,
            "{year} {}: mean rank {mean_rank} of {n} for the same president's addresses ({own:?})",
            all[t].president
        );
    }
}

/// ZIP-FIT with a president's addresses as the target set picks mostly
/// addresses of the same era (within 20 years).
#[test]
fn zipfit_selects_the_same_era() {
    let all = addresses();
    let c = Deflate::default();
    let targets: Vec<&[u8]> = all
        .iter()
        .filter(|a| (2009..=2012).contains(&a.year))
        .map(|a| a.text.as_slice())
        .collect();
    let pool: Vec<&Address> = all
        .iter()
        .filter(|a| !(2009..=2012).contains(&a.year))
        .collect();
    let texts: Vec<&[u8]> = pool.iter().map(|a| a.text.as_slice()).collect();
    let top = zipfit_select(&c, &targets, &texts, 10).unwrap();
    let recent = top.iter().filter(|r| pool[r.index].year >= 1990).count();
    let years: Vec<u32> = top.iter().map(|r| pool[r.index].year).collect();
    assert!(recent >= ERA_HITS, "top 10 years {years:?}");
}

const RANK_FRACTION: f64 = 0.25;
const ERA_HITS: usize = 7;
