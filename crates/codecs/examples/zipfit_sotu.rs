//! Ranks the State of the Union addresses by normalized compression distance
//! (deflate, level 9) to a target address, ZIP-FIT style.
//!
//! ```text
//! cargo run --release -p tensorpress-codecs --example zipfit_sotu [-- YEAR]
//! ```
//!
//! Reads `$TENSORPRESS_CACHE/sotu/*.txt` (default `~/.cache/tensorpress`),
//! files named `YEAR_name_party.txt`; the target defaults to 2021. Every
//! text is cut to its first 16 KiB so that a pair fits deflate's 32 KiB
//! window (see `tensorpress_codecs::ncd`).

use std::path::PathBuf;

use tensorpress_codecs::ncd::{rank_by_ncd, zipfit_alignment, Deflate};

/// An address: year, president, party, the first 16 KiB of its text.
struct Address {
    year: u32,
    president: String,
    party: String,
    text: Vec<u8>,
}

fn sotu_dir() -> PathBuf {
    let cache = std::env::var_os("TENSORPRESS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tensorpress")))
        .unwrap_or_else(|| PathBuf::from(".cache/tensorpress"));
    cache.join("sotu")
}

fn load() -> Result<Vec<Address>, Box<dyn std::error::Error>> {
    let dir = sotu_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| {
        format!(
            "cannot read {}: {e} (run scripts/fetch-testdata.sh)",
            dir.display()
        )
    })? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let parts: Vec<&str> = stem.split('_').collect();
        let Some(year) = parts.first().and_then(|y| y.parse().ok()) else {
            continue;
        };
        if parts.len() < 3 {
            continue;
        }
        let mut text = std::fs::read(&path)?;
        text.truncate(Deflate::WINDOW / 2);
        out.push(Address {
            year,
            president: parts[1..parts.len() - 1].join(" "),
            party: parts[parts.len() - 1].to_string(),
            text,
        });
    }
    out.sort_by_key(|a| a.year);
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let year: u32 = std::env::args()
        .nth(1)
        .map(|y| y.parse())
        .transpose()?
        .unwrap_or(2021);
    let all = load()?;
    let t = all
        .iter()
        .position(|a| a.year == year)
        .ok_or_else(|| format!("no address for {year} in {}", sotu_dir().display()))?;
    let target = &all[t];
    let others: Vec<&Address> = all.iter().filter(|a| a.year != year).collect();
    let texts: Vec<&[u8]> = others.iter().map(|a| a.text.as_slice()).collect();
    let c = Deflate::default();
    let start = std::time::Instant::now();
    let ranked = rank_by_ncd(&c, &target.text, &texts)?;
    println!(
        "target: {} {} ({}), {} candidates, {:.2} s",
        target.year,
        target.president,
        target.party,
        others.len(),
        start.elapsed().as_secs_f64()
    );
    println!("| rank | year | president | party | NCD | ZIP-FIT alignment |");
    println!("|---:|---:|---|---|---:|---:|");
    for (rank, r) in ranked.iter().take(10).enumerate() {
        let a = others[r.index];
        let align = zipfit_alignment(&c, &[&target.text], &a.text)?;
        println!(
            "| {} | {} | {} | {} | {:.4} | {:.4} |",
            rank + 1,
            a.year,
            a.president,
            a.party,
            r.score,
            align
        );
    }
    let mean = ranked.iter().map(|r| r.score).sum::<f64>() / ranked.len() as f64;
    let last = ranked.last().map_or(0.0, |r| r.score);
    println!("mean NCD {mean:.4}, farthest {last:.4}");
    let own: Vec<usize> = ranked
        .iter()
        .enumerate()
        .filter(|(_, r)| others[r.index].president == target.president)
        .map(|(rank, _)| rank + 1)
        .collect();
    if !own.is_empty() {
        println!("ranks of {}'s other addresses: {own:?}", target.president);
    }
    Ok(())
}
