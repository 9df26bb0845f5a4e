//! EMS's global-local score and its merge of evicted tokens (the policy is
//! described in the parent module).

use super::Head;

/// EMS's global-local score of the first `old` kept tokens: mean attention
/// received per query that could see the token, plus the attention of the
/// last `window` queries, each normalized to sum to one; sinks first always.
pub(super) fn ems_scores(head: &Head, old: usize, sinks: usize) -> Vec<f32> {
    let global: Vec<f32> = (0..old)
        .map(|i| head.score[i] / head.hits[i].max(1.0))
        .collect();
    let mut local = vec![0f32; old];
    for row in &head.votes {
        for (l, r) in local.iter_mut().zip(row) {
            *l += r;
        }
    }
    let norm = |v: &[f32]| v.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    let (gs, ls) = (norm(&global), norm(&local));
    (0..old)
        .map(|i| {
            if head.pos[i] < sinks {
                f32::INFINITY
            } else {
                global[i] / gs + local[i] / ls
            }
        })
        .collect()
}

/// EMS's merge: every token not in `chosen` whose key's best cosine
/// similarity with a kept non-sink key reaches `threshold` is folded into
/// that token (values averaged with the tokens' mean attention as weights,
/// scores added); the rest are dropped.
pub(super) fn merge_evicted(
    head: &mut Head,
    chosen: &[usize],
    sinks: usize,
    threshold: f32,
    d: usize,
) {
    let n = head.pos.len();
    let mut kept = vec![false; n];
    for &c in chosen {
        kept[c] = true;
    }
    let norm = |x: &[f32]| {
        x.iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE)
    };
    let targets: Vec<(usize, f32)> = chosen
        .iter()
        .filter(|&&c| head.pos[c] >= sinks)
        .map(|&c| (c, norm(&head.keys[c * d..(c + 1) * d])))
        .collect();
    if targets.is_empty() {
        return;
    }
    let weight = |h: &Head, i: usize| h.score[i] / h.hits[i].max(1.0) + 1e-6;
    for e in (0..n).filter(|&e| !kept[e]) {
        let ke = &head.keys[e * d..(e + 1) * d];
        let ne = norm(ke);
        let (best, cos) = targets
            .iter()
            .map(|&(c, nc)| {
                let kc = &head.keys[c * d..(c + 1) * d];
                let dot: f32 = ke.iter().zip(kc).map(|(a, b)| a * b).sum();
                (c, dot / (ne * nc))
            })
            .fold((usize::MAX, f32::NEG_INFINITY), |b, x| {
                if x.1 > b.1 {
                    x
                } else {
                    b
                }
            });
        if best == usize::MAX || cos < threshold {
            continue;
        }
        let (we, wc) = (weight(head, e), weight(head, best));
        let share = we / (we + wc);
        for i in 0..d {
            let v = head.values[e * d + i];
            let slot = &mut head.values[best * d + i];
            *slot += share * (v - *slot);
        }
        head.score[best] += head.score[e];
        head.hits[best] = head.hits[best].max(head.hits[e]);
    }
}
