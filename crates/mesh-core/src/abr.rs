//! Rendition choice with hlsdemux2's semantics: measured throughput (the minimum of the last
//! fragment and the mean of the last three) scaled by `bandwidth-target-ratio`, or a fixed
//! `connection-bitrate`, clamped to [`min-bitrate`, `max-bitrate`].

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbrConfig {
    /// Fixed connection speed in bits/s; 0 = measure.
    pub connection_bitrate: u64,
    pub bandwidth_target_ratio: f64,
    pub min_bitrate: u64,
    /// 0 = no limit.
    pub max_bitrate: u64,
    /// Bits/s to choose the first rendition with; 0 = the manifest's first.
    pub start_bitrate: u64,
}

impl Default for AbrConfig {
    fn default() -> Self {
        AbrConfig {
            connection_bitrate: 0,
            bandwidth_target_ratio: 0.8,
            min_bitrate: 0,
            max_bitrate: 0,
            start_bitrate: 0,
        }
    }
}

/// Throughput of recent downloads.
#[derive(Debug, Default, Clone)]
pub struct ThroughputEstimator {
    recent: VecDeque<f64>,
}

const HISTORY: usize = 3;
/// Transfers shorter than this say more about latency than bandwidth.
const MIN_SAMPLE: Duration = Duration::from_millis(1);

impl ThroughputEstimator {
    pub fn record(&mut self, bytes: u64, elapsed: Duration) {
        let elapsed = elapsed.max(MIN_SAMPLE);
        let bits_per_second = bytes as f64 * 8.0 / elapsed.as_secs_f64();
        if self.recent.len() == HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(bits_per_second);
    }

    /// Bits/s, or None before the first sample.
    pub fn estimate(&self) -> Option<u64> {
        let last = *self.recent.back()?;
        let mean = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        Some(last.min(mean) as u64)
    }
}

/// The index of the rendition to play for a target bitrate: the highest bandwidth that fits
/// the target and the [min, max] window; if none fits the target, the lowest in the window;
/// if the window is empty, the lowest overall.
pub fn rendition_for_bitrate(bandwidths: &[u64], target: u64, min: u64, max: u64) -> usize {
    let in_window = |b: u64| b >= min && (max == 0 || b <= max);
    let lowest = |filter: &dyn Fn(u64) -> bool| {
        bandwidths
            .iter()
            .enumerate()
            .filter(|(_, b)| filter(**b))
            .min_by_key(|(i, b)| (**b, *i))
            .map(|(i, _)| i)
    };
    bandwidths
        .iter()
        .enumerate()
        .filter(|(_, b)| in_window(**b) && **b <= target)
        .max_by_key(|(i, b)| (**b, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
        .or_else(|| lowest(&in_window))
        .or_else(|| lowest(&|_| true))
        .unwrap_or(0)
}

impl AbrConfig {
    /// The rendition to start with. `default_index` is the manifest's own first choice.
    pub fn initial(&self, bandwidths: &[u64], default_index: usize) -> usize {
        if self.connection_bitrate > 0 {
            return self.for_connection_bitrate(bandwidths);
        }
        if self.start_bitrate > 0 {
            return rendition_for_bitrate(
                bandwidths,
                self.start_bitrate,
                self.min_bitrate,
                self.max_bitrate,
            );
        }
        let fits = bandwidths.get(default_index).is_some_and(|b| {
            *b >= self.min_bitrate && (self.max_bitrate == 0 || *b <= self.max_bitrate)
        });
        if fits {
            default_index
        } else {
            rendition_for_bitrate(bandwidths, u64::MAX, self.min_bitrate, self.max_bitrate)
        }
    }

    /// The rendition for the next segment given what was measured, or `current` when there
    /// is nothing to go on yet.
    pub fn next(
        &self,
        bandwidths: &[u64],
        current: usize,
        estimator: &ThroughputEstimator,
    ) -> usize {
        if self.connection_bitrate > 0 {
            return self.for_connection_bitrate(bandwidths);
        }
        match estimator.estimate() {
            Some(rate) => {
                let target = (rate as f64 * self.bandwidth_target_ratio) as u64;
                rendition_for_bitrate(bandwidths, target, self.min_bitrate, self.max_bitrate)
            }
            None => current,
        }
    }

    /// As in hlsdemux2, a fixed connection bitrate is used as it is: `max-bitrate` does not
    /// cap it, `min-bitrate` still applies.
    fn for_connection_bitrate(&self, bandwidths: &[u64]) -> usize {
        rendition_for_bitrate(bandwidths, self.connection_bitrate, self.min_bitrate, 0)
    }
}

/// The codec families of a rendition (`avc`, `aac`, …), sorted, as [`codec_groups`] groups
/// them: from its CODECS attribute, or from its first segment when it has none. Codecs of
/// no known family count by their own name.
pub fn families_of_codecs(codecs: &str) -> Vec<String> {
    let mut families: Vec<String> = codecs
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| crate::container::codec_family(c).map_or_else(|| c.to_owned(), str::to_owned))
        .collect();
    families.sort();
    families.dedup();
    families
}

/// Renditions that play with the same decoders: ABR switches only within one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecGroup {
    /// Sorted codec families; empty when they could not be told.
    pub families: Vec<String>,
    /// Indexes of the renditions, in manifest order.
    pub renditions: Vec<usize>,
}

/// Groups renditions by their codec families, in the order of each group's first rendition.
pub fn codec_groups(families: &[Vec<String>]) -> Vec<CodecGroup> {
    let mut groups: Vec<CodecGroup> = Vec::new();
    for (index, f) in families.iter().enumerate() {
        match groups.iter_mut().find(|g| &g.families == f) {
            Some(group) => group.renditions.push(index),
            None => groups.push(CodecGroup {
                families: f.clone(),
                renditions: vec![index],
            }),
        }
    }
    groups
}

/// The group to play: the first group holding the first family of `preference` that has a
/// decoder for each of its families, else the next preferred family, else the first group in
/// manifest order whose codecs all decode. `decodable` answers for one family; a group whose
/// families are unknown counts as decodable (its decoder will tell). Err names every group's
/// codecs when none can be decoded.
pub fn choose_codec_group(
    groups: &[CodecGroup],
    preference: &[String],
    decodable: impl Fn(&str) -> bool,
) -> Result<usize, String> {
    let plays = |g: &CodecGroup| g.families.iter().all(|f| decodable(f));
    let preferred = preference.iter().find_map(|wanted| {
        groups
            .iter()
            .position(|g| g.families.iter().any(|f| f.eq_ignore_ascii_case(wanted)) && plays(g))
    });
    preferred
        .or_else(|| groups.iter().position(plays))
        .ok_or_else(|| {
            groups
                .iter()
                .map(|g| g.families.join("+"))
                .collect::<Vec<_>>()
                .join(", ")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u64; 3] = [1_000_000, 300_000, 600_000];

    fn families(list: &[&str]) -> Vec<Vec<String>> {
        list.iter().map(|c| families_of_codecs(c)).collect()
    }

    #[test]
    fn variants_group_by_codec_family() {
        let f = families(&[
            "avc1.64001f,mp4a.40.2",
            "hvc1.1.6.L93.90,mp4a.40.2",
            "mp4a.40.2, avc1.4d401e",
            "hev1.1.6.L120.90,mp4a.40.5",
        ]);
        let groups = codec_groups(&f);
        assert_eq!(
            groups,
            [
                CodecGroup {
                    families: vec!["aac".into(), "avc".into()],
                    renditions: vec![0, 2]
                },
                CodecGroup {
                    families: vec!["aac".into(), "hevc".into()],
                    renditions: vec![1, 3]
                },
            ]
        );
        let all = |_: &str| true;
        assert_eq!(choose_codec_group(&groups, &[], all), Ok(0));
        let prefer = ["hevc".to_string(), "avc".to_string()];
        assert_eq!(choose_codec_group(&groups, &prefer, all), Ok(1));
        let no_hevc = |f: &str| f != "hevc";
        assert_eq!(choose_codec_group(&groups, &prefer, no_hevc), Ok(0));
        let no_video = |f: &str| f == "aac";
        assert_eq!(
            choose_codec_group(&groups, &prefer, no_video),
            Err("aac+avc, aac+hevc".to_string())
        );
        // Unknown codecs group by name; no codecs at all is one more group.
        let f = families(&["xyz9", ""]);
        assert_eq!(f, vec![vec!["xyz9".to_string()], vec![]]);
    }

    #[test]
    fn picks_highest_fitting_within_window() {
        assert_eq!(rendition_for_bitrate(&LADDER, 700_000, 0, 0), 2);
        assert_eq!(rendition_for_bitrate(&LADDER, 5_000_000, 0, 0), 0);
        assert_eq!(rendition_for_bitrate(&LADDER, 5_000_000, 0, 650_000), 2);
        assert_eq!(rendition_for_bitrate(&LADDER, 100, 0, 0), 1);
        assert_eq!(rendition_for_bitrate(&LADDER, 100, 500_000, 0), 2);
        assert_eq!(rendition_for_bitrate(&LADDER, 5_000_000, 2_000_000, 0), 1);
    }

    #[test]
    fn estimator_takes_min_of_last_and_mean() {
        let mut e = ThroughputEstimator::default();
        assert_eq!(e.estimate(), None);
        e.record(1_000_000, Duration::from_secs(1)); // 8 Mbit/s
        e.record(2_000_000, Duration::from_secs(1)); // 16
        assert_eq!(e.estimate(), Some(12_000_000));
        e.record(250_000, Duration::from_secs(1)); // 2
        assert_eq!(e.estimate(), Some(2_000_000));
        e.record(3_000_000, Duration::from_secs(1)); // 24; window is 16, 2, 24
        assert_eq!(e.estimate(), Some(14_000_000));
    }

    #[test]
    fn fixed_connection_bitrate_ignores_measurements() {
        let cfg = AbrConfig {
            connection_bitrate: 700_000,
            ..Default::default()
        };
        let mut e = ThroughputEstimator::default();
        e.record(100, Duration::from_secs(10));
        assert_eq!(cfg.initial(&LADDER, 0), 2);
        assert_eq!(cfg.next(&LADDER, 0, &e), 2);
        let measured = AbrConfig::default();
        assert_eq!(measured.initial(&LADDER, 0), 0);
        assert_eq!(measured.next(&LADDER, 0, &e), 1);
        let capped = AbrConfig {
            max_bitrate: 650_000,
            ..Default::default()
        };
        assert_eq!(capped.initial(&LADDER, 0), 2);
    }
}
