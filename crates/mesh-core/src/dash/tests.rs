use super::*;
use crate::model::ByteRange;

const MPD_URL: &str = "http://cdn.test/v/manifest.mpd";

fn url() -> Url {
    Url::parse(MPD_URL).unwrap()
}

fn mpd(xml: &str) -> Mpd {
    parse_mpd(&url(), xml.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn at(text: &str) -> DateTime<Utc> {
    parse_utc_time(text).unwrap()
}

fn epoch() -> DateTime<Utc> {
    at("2024-01-01T00:00:00Z")
}

/// The timeline of the default rendition of the track of `kind`.
fn timeline_of(mpd: &Mpd, kind: TrackKind, now: DateTime<Utc>) -> MediaTimeline {
    let opts = DashOptions::default();
    timeline_with(mpd, kind, now, &opts, &mut SequenceBases::default())
}

fn timeline_with(
    mpd: &Mpd,
    kind: TrackKind,
    now: DateTime<Utc>,
    opts: &DashOptions,
    bases: &mut SequenceBases,
) -> MediaTimeline {
    let p = presentation(mpd, opts, now).unwrap();
    let track = p.tracks.iter().find(|t| t.kind == kind).expect("track");
    let rendition = &track.renditions[track.default_rendition];
    timeline(mpd, kind, rendition, now, opts, &HashMap::new(), bases)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn urls(t: &MediaTimeline) -> Vec<String> {
    t.segments
        .iter()
        .map(|s| {
            s.resource
                .url
                .path()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn seqs(t: &MediaTimeline) -> Vec<u64> {
    t.segments.iter().map(|s| s.sequence).collect()
}

fn starts_ms(t: &MediaTimeline) -> Vec<u128> {
    t.segments.iter().map(|s| s.start.as_millis()).collect()
}

fn durations_ms(t: &MediaTimeline) -> Vec<u128> {
    t.segments.iter().map(|s| s.duration.as_millis()).collect()
}

fn wrap(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT7.0S" minBufferTime="PT2S">
  <Period id="0" start="PT0S">{body}</Period>
</MPD>"#
    )
}

#[test]
fn template_with_timeline_repeats_gaps_and_open_repeat() {
    let m = mpd(&wrap(
        r#"
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4">
      <Representation id="v0" codecs="avc1.42c00d" bandwidth="750000" width="320" height="240">
        <SegmentTemplate timescale="1000" presentationTimeOffset="1000" startNumber="5"
            initialization="init-$RepresentationID$.m4s" media="t-$Time$-n$Number%03d$.m4s">
          <SegmentTimeline>
            <S t="1000" d="2000" r="1"/>
            <S t="5500" d="1000" r="-1"/>
            <S t="7500" d="500"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>"#,
    ));
    let t = timeline_of(&m, TrackKind::Video, epoch());
    assert!(t.ended && !t.is_live);
    assert_eq!(
        urls(&t),
        [
            "t-1000-n005.m4s",
            "t-3000-n006.m4s",
            // gap from 5000 to 5500, then r=-1 up to the next S@t
            "t-5500-n007.m4s",
            "t-6500-n008.m4s",
            "t-7500-n009.m4s",
        ]
    );
    assert_eq!(seqs(&t), [5, 6, 7, 8, 9]);
    assert_eq!(starts_ms(&t), [0, 2000, 4500, 5500, 6500]);
    assert_eq!(durations_ms(&t), [2000, 2000, 1000, 1000, 500]);
    let init = t.segments[0].init.as_ref().unwrap();
    assert_eq!(init.url.as_str(), "http://cdn.test/v/init-v0.m4s");
    assert_eq!(init.range, None);
    assert!(t.segments.iter().all(|s| !s.discontinuity));

    // r=-1 on the last S repeats up to the Period end (7 s after the 1 s offset).
    let m = mpd(&wrap(
        r#"
    <AdaptationSet contentType="audio">
      <Representation id="a" bandwidth="64000">
        <SegmentTemplate timescale="10" media="$Number$.m4s"><SegmentTimeline><S d="20" r="-1"/></SegmentTimeline></SegmentTemplate>
      </Representation>
    </AdaptationSet>"#,
    ));
    let t = timeline_of(&m, TrackKind::Audio, epoch());
    assert_eq!(urls(&t), ["1.m4s", "2.m4s", "3.m4s", "4.m4s"]);
    assert_eq!(starts_ms(&t), [0, 2000, 4000, 6000]);
}

#[test]
fn template_with_duration_number_width_and_bandwidth() {
    let m = mpd(&wrap(
        r#"
    <AdaptationSet contentType="video" frameRate="25">
      <SegmentTemplate timescale="1000000" duration="2000000" startNumber="0"
          initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Bandwidth$/$Number%05d$.m4s"/>
      <Representation id="hi" bandwidth="2000000" width="1280" height="720"/>
      <Representation id="lo" bandwidth="500000" width="640" height="360"/>
    </AdaptationSet>"#,
    ));
    let p = presentation(&m, &DashOptions::default(), epoch()).unwrap();
    assert_eq!(p.tracks.len(), 1);
    let video = &p.tracks[0];
    assert_eq!(video.renditions.len(), 2);
    assert_eq!(video.renditions[1].bandwidth, 500_000);
    assert_eq!(video.renditions[1].resolution, Some((640, 360)));
    assert_eq!(video.renditions[0].url.as_str(), MPD_URL);
    let low = &video.renditions[1];
    let t = timeline(
        &m,
        TrackKind::Video,
        low,
        epoch(),
        &DashOptions::default(),
        &HashMap::new(),
        &mut SequenceBases::default(),
    )
    .unwrap();
    assert_eq!(
        t.segments
            .iter()
            .map(|s| s.resource.url.path())
            .collect::<Vec<_>>(),
        [
            "/v/lo/500000/00000.m4s",
            "/v/lo/500000/00001.m4s",
            "/v/lo/500000/00002.m4s",
            "/v/lo/500000/00003.m4s"
        ]
    );
    assert_eq!(seqs(&t), [0, 1, 2, 3]);
    // The last segment stops at the Period end.
    assert_eq!(durations_ms(&t), [2000, 2000, 2000, 1000]);
    assert_eq!(t.duration(), Duration::from_secs(7));
    assert_eq!(
        t.segments[3].init.as_ref().unwrap().url.as_str(),
        "http://cdn.test/v/lo/init.mp4"
    );

    // dashsink: no timescale (1), no startNumber (1), no init, 7.4 s.
    let m = mpd(r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-main:2011" type="static" mediaPresentationDuration="P0Y0M0DT0H0M7.40S" minBufferTime="P0Y0M0DT0H0M2.0S"><Period id="period_00" duration="P0Y0M0DT0H0M7.40S" bitstreamSwitching="false"><AdaptationSet id="1" contentType="video" subsegmentStartsWithSAP="0" bitstreamSwitching="false"><Representation id="video_0" bandwidth="224775" width="320" height="240" mimeType="video/mp2t" codecs="avc1"><SegmentTemplate media="video_0_$Number$.ts" duration="2"/></Representation></AdaptationSet><AdaptationSet id="2" contentType="audio" subsegmentStartsWithSAP="0" bitstreamSwitching="false"><Representation id="audio_0" bandwidth="8625" audioSamplingRate="48000" mimeType="video/mp2t" codecs="mp4a"><SegmentTemplate media="audio_0_$Number$.ts" duration="2"/></Representation></AdaptationSet></Period></MPD>"#);
    let t = timeline_of(&m, TrackKind::Audio, epoch());
    assert_eq!(
        urls(&t),
        [
            "audio_0_1.ts",
            "audio_0_2.ts",
            "audio_0_3.ts",
            "audio_0_4.ts"
        ]
    );
    assert!(t.segments.iter().all(|s| s.init.is_none()));
    assert_eq!(durations_ms(&t), [2000, 2000, 2000, 1400]);
}

#[test]
fn segment_list_with_ranges_and_initialization() {
    let m = mpd(&wrap(
        r#"
    <AdaptationSet contentType="video">
      <Representation id="0" bandwidth="750096" width="320" height="240">
        <BaseURL>manifest-stream0.mp4</BaseURL>
        <SegmentList timescale="1000000" duration="2000000">
          <Initialization range="0-805" />
          <SegmentURL mediaRange="806-175526" indexRange="806-857" />
          <SegmentURL mediaRange="175527-369097" />
          <SegmentURL mediaRange="369098-556178" />
          <SegmentURL media="other.mp4" />
        </SegmentList>
      </Representation>
    </AdaptationSet>"#,
    ));
    let t = timeline_of(&m, TrackKind::Video, epoch());
    assert_eq!(seqs(&t), [1, 2, 3, 4]);
    let resources: Vec<(String, Option<ByteRange>)> = t
        .segments
        .iter()
        .map(|s| (s.resource.url.to_string(), s.resource.range))
        .collect();
    let file = "http://cdn.test/v/manifest-stream0.mp4".to_string();
    assert_eq!(
        resources,
        [
            (
                file.clone(),
                Some(ByteRange {
                    offset: 806,
                    length: 174_721
                })
            ),
            (
                file.clone(),
                Some(ByteRange {
                    offset: 175_527,
                    length: 193_571
                })
            ),
            (
                file.clone(),
                Some(ByteRange {
                    offset: 369_098,
                    length: 187_081
                })
            ),
            ("http://cdn.test/v/other.mp4".to_string(), None),
        ]
    );
    let init = t.segments[0].init.clone().unwrap();
    assert_eq!(init.url.as_str(), file);
    assert_eq!(
        init.range,
        Some(ByteRange {
            offset: 0,
            length: 806
        })
    );
    assert_eq!(starts_ms(&t), [0, 2000, 4000, 6000]);
    assert_eq!(durations_ms(&t), [2000, 2000, 2000, 1000]);

    // Initialization@sourceURL, SegmentURL@media.
    let m = mpd(&wrap(
        r#"
    <AdaptationSet contentType="audio">
      <Representation id="1" bandwidth="64000">
        <SegmentList timescale="1000" duration="4000">
          <Initialization sourceURL="init-stream1.m4s" />
          <SegmentURL media="chunk-1.m4s" />
          <SegmentURL media="chunk-2.m4s" />
        </SegmentList>
      </Representation>
    </AdaptationSet>"#,
    ));
    let t = timeline_of(&m, TrackKind::Audio, epoch());
    assert_eq!(urls(&t), ["chunk-1.m4s", "chunk-2.m4s"]);
    assert_eq!(
        t.segments[1].init.as_ref().unwrap().url.as_str(),
        "http://cdn.test/v/init-stream1.m4s"
    );
}

fn sidx(first_offset: u32, refs: &[(u32, u32)], timescale: u32) -> Vec<u8> {
    let mut body = vec![0u8, 0, 0, 0];
    body.extend(1u32.to_be_bytes());
    body.extend(timescale.to_be_bytes());
    body.extend(0u32.to_be_bytes());
    body.extend(first_offset.to_be_bytes());
    body.extend(0u16.to_be_bytes());
    body.extend((refs.len() as u16).to_be_bytes());
    for (size, duration) in refs {
        body.extend(size.to_be_bytes());
        body.extend(duration.to_be_bytes());
        body.extend(0x9000_0000u32.to_be_bytes());
    }
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend(b"sidx");
    out.extend(body);
    out
}

#[test]
fn segment_base_reads_the_index() {
    let m = mpd(&wrap(
        r#"
    <AdaptationSet contentType="video">
      <Representation id="v" bandwidth="1000">
        <BaseURL>media/video.mp4</BaseURL>
        <SegmentBase indexRange="810-897" timescale="90000" presentationTimeOffset="0"/>
      </Representation>
    </AdaptationSet>"#,
    ));
    let p = presentation(&m, &DashOptions::default(), epoch()).unwrap();
    let rendition = &p.tracks[0].renditions[0];
    let needed = index_resources(&m, TrackKind::Video, rendition).unwrap();
    let file = Url::parse("http://cdn.test/v/media/video.mp4").unwrap();
    assert_eq!(
        needed,
        [Resource {
            url: file.clone(),
            range: Some(ByteRange {
                offset: 810,
                length: 88
            })
        }]
    );
    // Without the index the timeline cannot be built.
    assert!(
        timeline(
            &m,
            TrackKind::Video,
            rendition,
            epoch(),
            &DashOptions::default(),
            &HashMap::new(),
            &mut SequenceBases::default()
        )
        .is_err()
    );
    let index_box = sidx(0, &[(1000, 2000), (1500, 2000), (700, 1000)], 1000);
    assert_eq!(index_box.len(), 32 + 3 * 12);
    let index = parse_sidx(810, &index_box).unwrap();
    let mut indexes = HashMap::new();
    indexes.insert(needed[0].clone(), Arc::new(index));
    let t = timeline(
        &m,
        TrackKind::Video,
        rendition,
        epoch(),
        &DashOptions::default(),
        &indexes,
        &mut SequenceBases::default(),
    )
    .unwrap();
    let media_start = 810 + index_box.len() as u64;
    let ranges: Vec<ByteRange> = t
        .segments
        .iter()
        .map(|s| s.resource.range.unwrap())
        .collect();
    assert_eq!(
        ranges,
        [
            ByteRange {
                offset: media_start,
                length: 1000
            },
            ByteRange {
                offset: media_start + 1000,
                length: 1500
            },
            ByteRange {
                offset: media_start + 2500,
                length: 700
            },
        ]
    );
    assert!(t.segments.iter().all(|s| s.resource.url == file));
    assert_eq!(starts_ms(&t), [0, 2000, 4000]);
    assert_eq!(seqs(&t), [1, 2, 3]);
    // The init section is everything before the index.
    let init = t.segments[0].init.clone().unwrap();
    assert_eq!(
        init,
        Resource {
            url: file.clone(),
            range: Some(ByteRange {
                offset: 0,
                length: 810
            })
        }
    );

    // An explicit Initialization wins.
    let m = mpd(&wrap(
        r#"
    <AdaptationSet contentType="video">
      <Representation id="v" bandwidth="1000">
        <BaseURL>media/video.mp4</BaseURL>
        <SegmentBase indexRange="810-897"><Initialization range="0-799"/></SegmentBase>
      </Representation>
    </AdaptationSet>"#,
    ));
    let rendition = &presentation(&m, &DashOptions::default(), epoch())
        .unwrap()
        .tracks[0]
        .renditions[0]
        .clone();
    let t = timeline(
        &m,
        TrackKind::Video,
        rendition,
        epoch(),
        &DashOptions::default(),
        &indexes,
        &mut SequenceBases::default(),
    )
    .unwrap();
    assert_eq!(
        t.segments[0].init.as_ref().unwrap().range,
        Some(ByteRange {
            offset: 0,
            length: 800
        })
    );
}

#[test]
fn base_urls_resolve_at_every_level() {
    let m = mpd(
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT4S">
  <BaseURL>http://media.test/root/</BaseURL>
  <Period>
    <BaseURL>period1/</BaseURL>
    <AdaptationSet contentType="video">
      <BaseURL>../video/</BaseURL>
      <Representation id="r1" bandwidth="1">
        <BaseURL>r1/</BaseURL>
        <SegmentTemplate media="s$Number$.m4s" initialization="i.mp4" duration="2"/>
      </Representation>
    </AdaptationSet>
    <AdaptationSet contentType="audio">
      <BaseURL>https://other.test/abs/</BaseURL>
      <Representation id="a" bandwidth="1">
        <SegmentTemplate media="/top/$Number$.m4s" duration="2"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#,
    );
    let t = timeline_of(&m, TrackKind::Video, epoch());
    assert_eq!(
        t.segments[1].resource.url.as_str(),
        "http://media.test/root/video/r1/s2.m4s"
    );
    assert_eq!(
        t.segments[0].init.as_ref().unwrap().url.as_str(),
        "http://media.test/root/video/r1/i.mp4"
    );
    let t = timeline_of(&m, TrackKind::Audio, epoch());
    assert_eq!(
        t.segments[0].resource.url.as_str(),
        "https://other.test/top/1.m4s"
    );
}

#[test]
fn periods_play_one_after_another() {
    let m = mpd(
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT10S">
  <Period id="p1" duration="PT4S">
    <AdaptationSet id="1" contentType="video">
      <Representation id="v" bandwidth="1000">
        <SegmentTemplate media="p1-$Number$.m4s" initialization="p1-init.mp4" duration="2" startNumber="1"/>
      </Representation>
    </AdaptationSet>
  </Period>
  <Period id="p2">
    <AdaptationSet id="7" contentType="video">
      <Representation id="other" bandwidth="900">
        <SegmentTemplate timescale="1000" media="p2-$Time$.m4s" initialization="p2-init.mp4" startNumber="100">
          <SegmentTimeline><S t="0" d="3000" r="1"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#,
    );
    let t = timeline_of(&m, TrackKind::Video, epoch());
    assert_eq!(
        urls(&t),
        ["p1-1.m4s", "p1-2.m4s", "p2-0.m4s", "p2-3000.m4s"]
    );
    assert_eq!(seqs(&t), [1, 2, 3, 4]);
    assert_eq!(starts_ms(&t), [0, 2000, 4000, 7000]);
    let discontinuities: Vec<bool> = t.segments.iter().map(|s| s.discontinuity).collect();
    assert_eq!(discontinuities, [false, false, true, false]);
    let inits: Vec<&str> = t
        .segments
        .iter()
        .map(|s| s.init.as_ref().unwrap().url.path())
        .collect();
    assert_eq!(
        inits,
        [
            "/v/p1-init.mp4",
            "/v/p1-init.mp4",
            "/v/p2-init.mp4",
            "/v/p2-init.mp4"
        ]
    );
    assert_eq!(t.duration(), Duration::from_secs(10));
}

const LIVE: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="2024-01-01T00:00:00Z"
     minimumUpdatePeriod="PT2S" timeShiftBufferDepth="PT10S" SUGGESTED minBufferTime="PT2S">
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="/time"/>
  <Period id="0" start="PT0S">
    <AdaptationSet contentType="video">
      <Representation id="v" bandwidth="1000">
        <SegmentTemplate timescale="1000" duration="2000" startNumber="1" media="v-$Number$.m4s" initialization="v-init.mp4"/>
      </Representation>
    </AdaptationSet>
    <AdaptationSet contentType="audio" lang="en">
      <Representation id="a" bandwidth="100">
        <SegmentTemplate timescale="1000" startNumber="10" media="a-$Time$.m4s">
          <SegmentTimeline><S t="0" d="2000" r="-1"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

#[test]
fn dynamic_lists_only_available_segments_in_the_time_shift_buffer() {
    let m = mpd(&LIVE.replace("SUGGESTED", ""));
    // 7.5 s after the start: segments ending at 2, 4 and 6 s are available.
    let now = at("2024-01-01T00:00:07.5Z");
    let t = timeline_of(&m, TrackKind::Video, now);
    assert!(t.is_live && !t.ended);
    assert_eq!(urls(&t), ["v-1.m4s", "v-2.m4s", "v-3.m4s"]);
    assert_eq!(seqs(&t), [1, 2, 3]);
    // The property's default, 10 s.
    assert_eq!(t.hold_back, Duration::from_secs(10));
    let t = timeline_of(&m, TrackKind::Audio, now);
    assert_eq!(urls(&t), ["a-0.m4s", "a-2000.m4s", "a-4000.m4s"]);
    assert_eq!(seqs(&t), [10, 11, 12]);

    // Exactly at a boundary the segment ending there is available.
    let t = timeline_of(&m, TrackKind::Video, at("2024-01-01T00:00:08Z"));
    assert_eq!(seqs(&t), [1, 2, 3, 4]);

    // Later, the 10 s time-shift buffer drops the old ones; numbers stay the same.
    let now = at("2024-01-01T00:01:00.5Z");
    let t = timeline_of(&m, TrackKind::Video, now);
    // The segment ending at 50 s left the buffer at 60 s.
    assert_eq!(seqs(&t), [26, 27, 28, 29, 30]);
    assert_eq!(t.segments[0].start, Duration::from_secs(50));
    assert_eq!(
        t.segments.last().unwrap().start + t.segments.last().unwrap().duration,
        Duration::from_secs(60)
    );
    let t = timeline_of(&m, TrackKind::Audio, now);
    assert_eq!(seqs(&t), [35, 36, 37, 38, 39]);
    assert_eq!(urls(&t)[0], "a-50000.m4s");
    // 60 s of media, 10 s back: starts in the segment from 50 s.
    assert_eq!(t.live_start_sequence(), Some(35));

    // Before the availability start nothing is listed.
    let t = timeline_of(&m, TrackKind::Video, at("2023-12-31T23:59:59Z"));
    assert!(t.segments.is_empty() && t.is_live);
    // Nor in the first segment's duration.
    let t = timeline_of(&m, TrackKind::Video, at("2024-01-01T00:00:01.999Z"));
    assert!(t.segments.is_empty());
}

#[test]
fn long_running_live_without_time_shift_buffer_lists_the_newest_segments() {
    let m = mpd(&LIVE
        .replace("SUGGESTED", "")
        .replace(r#"timeShiftBufferDepth="PT10S""#, ""));
    // A year after the start: 15,811,200 segments of 2 s.
    let now = at("2025-01-01T00:00:00Z");
    let t = timeline_of(&m, TrackKind::Video, now);
    assert_eq!(t.segments.len(), MAX_LIVE_SEGMENTS);
    let last = 366 * 24 * 3600 / 2;
    assert_eq!(t.last_sequence(), Some(last));
    assert_eq!(
        t.first_sequence(),
        Some(last - MAX_LIVE_SEGMENTS as u64 + 1)
    );
    assert_eq!(urls(&t).last().unwrap(), &format!("v-{last}.m4s"));
    let t = timeline_of(&m, TrackKind::Audio, now);
    assert_eq!(t.segments.len(), MAX_LIVE_SEGMENTS);
    assert_eq!(t.last_sequence(), Some(last + 9));
}

#[test]
fn presentation_delay_sources() {
    let m = mpd(&LIVE.replace("SUGGESTED", r#"suggestedPresentationDelay="PT6S""#));
    let now = at("2024-01-01T00:01:00Z");
    assert_eq!(
        timeline_of(&m, TrackKind::Video, now).hold_back,
        Duration::from_secs(6)
    );
    let m = mpd(&LIVE.replace("SUGGESTED", ""));
    for (text, expected) in [
        ("12s", 12_000),
        ("2500ms", 2_500),
        ("3f", 6_000),
        ("bogus", 0),
    ] {
        let opts = DashOptions {
            presentation_delay: text.into(),
            ..DashOptions::default()
        };
        let t = timeline_with(
            &m,
            TrackKind::Video,
            now,
            &opts,
            &mut SequenceBases::default(),
        );
        assert_eq!(t.hold_back.as_millis(), expected, "{text}");
    }
    assert_eq!(
        parse_presentation_delay("5 F"),
        Some(PresentationDelay::Fragments(5))
    );
    assert_eq!(
        parse_presentation_delay("12 s"),
        Some(PresentationDelay::Time(Duration::from_secs(12)))
    );
    assert_eq!(parse_presentation_delay("12"), None);
    assert_eq!(parse_presentation_delay("s"), None);
    assert_eq!(parse_presentation_delay("1.5s"), None);
}

#[test]
fn dynamic_periods_keep_sequences_across_refreshes() {
    let two = r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="2024-01-01T00:00:00Z" minimumUpdatePeriod="PT2S">
  PERIOD1
  <Period id="b" start="PT20S">
    <AdaptationSet contentType="video"><Representation id="v" bandwidth="1">
      <SegmentTemplate timescale="1" duration="2" startNumber="1" media="b-$Number$.m4s"/>
    </Representation></AdaptationSet>
  </Period>
</MPD>"#;
    let first = r#"<Period id="a" start="PT0S">
    <AdaptationSet contentType="video"><Representation id="v" bandwidth="1">
      <SegmentTemplate timescale="1" duration="2" startNumber="1" media="a-$Number$.m4s"/>
    </Representation></AdaptationSet>
  </Period>"#;
    let mut bases = SequenceBases::default();
    let opts = DashOptions::default();
    let m = mpd(&two.replace("PERIOD1", first));
    let t = timeline_with(
        &m,
        TrackKind::Video,
        at("2024-01-01T00:00:24Z"),
        &opts,
        &mut bases,
    );
    assert_eq!(
        urls(&t),
        [
            "a-1.m4s", "a-2.m4s", "a-3.m4s", "a-4.m4s", "a-5.m4s", "a-6.m4s", "a-7.m4s", "a-8.m4s",
            "a-9.m4s", "a-10.m4s", "b-1.m4s", "b-2.m4s"
        ]
    );
    assert_eq!(seqs(&t), (1..=12).collect::<Vec<_>>());
    assert!(t.segments[10].discontinuity);
    // Period a leaves the MPD: b's segments keep their numbers.
    let m = mpd(&two.replace("PERIOD1", ""));
    let t = timeline_with(
        &m,
        TrackKind::Video,
        at("2024-01-01T00:00:26Z"),
        &opts,
        &mut bases,
    );
    assert_eq!(urls(&t), ["b-1.m4s", "b-2.m4s", "b-3.m4s"]);
    assert_eq!(seqs(&t), [11, 12, 13]);
}

#[test]
fn utc_timing_sources_and_formats() {
    let m = mpd(&LIVE.replace("SUGGESTED", "").replace(
        r#"<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="/time"/>"#,
        r#"<UTCTiming schemeIdUri="urn:mpeg:dash:utc:ntp:2014" value="pool.ntp.test"/>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-head:2014" value="/head"/>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="2024-01-01T00:00:30Z"/>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="https://time.test/iso?x=1 /t2"/>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="time.txt"/>"#,
    ));
    assert_eq!(
        clock_sources(&m),
        [
            ClockSource::Direct(at("2024-01-01T00:00:30Z")),
            ClockSource::Fetch(Url::parse("https://time.test/iso?x=1").unwrap()),
            ClockSource::Fetch(Url::parse("http://cdn.test/t2").unwrap()),
            ClockSource::Fetch(Url::parse("http://cdn.test/v/time.txt").unwrap()),
        ]
    );
    let expected = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.250Z")
        .unwrap()
        .with_timezone(&Utc);
    for text in [
        "2024-05-06T07:08:09.250Z",
        "2024-05-06T07:08:09.25Z\n",
        "2024-05-06T09:08:09.250+02:00",
        "2024-05-06T07:08:09.250",
        "2024-05-06 07:08:09.250Z",
        "\"2024-05-06T07:08:09.250Z\"",
        "2024-05-06t07:08:09.250z",
    ] {
        assert_eq!(parse_utc_time(text), Ok(expected), "{text:?}");
    }
    assert!(parse_utc_time("yesterday").is_err());
    assert!(parse_utc_time("").is_err());
}

#[test]
fn tracks_limits_roles_and_alternatives() {
    let m = mpd(&wrap(
        r#"
    <AdaptationSet id="v" contentType="video" frameRate="30">
      <SegmentTemplate media="$RepresentationID$-$Number$.m4s" duration="2"/>
      <Representation id="1080" bandwidth="6000000" width="1920" height="1080"/>
      <Representation id="720" bandwidth="3000000" width="1280" height="720"/>
      <Representation id="720p60" bandwidth="4000000" width="1280" height="720" frameRate="60"/>
      <Representation id="360" bandwidth="800000" width="640" height="360"/>
    </AdaptationSet>
    <AdaptationSet id="fr" contentType="audio" lang="fr">
      <SegmentTemplate media="$RepresentationID$-$Number$.m4s" duration="2"/>
      <Representation id="a-fr" bandwidth="64000"/>
    </AdaptationSet>
    <AdaptationSet id="en" mimeType="audio/mp4" lang="en">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="main"/>
      <SegmentTemplate media="$RepresentationID$-$Number$.m4s" duration="2"/>
      <Representation id="a-en-lo" bandwidth="64000"/>
      <Representation id="a-en-hi" bandwidth="128000"/>
    </AdaptationSet>
    <AdaptationSet id="thumbs" contentType="image" mimeType="image/jpeg">
      <Representation id="t" bandwidth="1"><SegmentTemplate media="t$Number$.jpg" duration="2"/></Representation>
    </AdaptationSet>
    <AdaptationSet id="subs" mimeType="text/vtt" lang="de">
      <Representation id="vtt" bandwidth="1"><BaseURL>subs/de.vtt</BaseURL></Representation>
    </AdaptationSet>"#,
    ));
    let opts = DashOptions {
        max_video_width: 1280,
        max_video_height: 720,
        max_video_framerate: (30, 1),
        ..DashOptions::default()
    };
    let p = presentation(&m, &opts, epoch()).unwrap();
    let kinds: Vec<TrackKind> = p.tracks.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [TrackKind::Video, TrackKind::Audio, TrackKind::Subtitle]
    );
    let ids: Vec<&str> = p.tracks[0]
        .renditions
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["v/720", "v/360"]);
    assert!(!p.tracks[0].muxed);
    // The main audio set, its best representation.
    let audio = &p.tracks[1];
    assert_eq!(audio.renditions[0].language.as_deref(), Some("en"));
    assert_eq!(audio.renditions[audio.default_rendition].id, "en/a-en-hi");
    // The subtitle file is one segment covering the Period.
    let subs = &p.tracks[2];
    let t = timeline(
        &m,
        TrackKind::Subtitle,
        &subs.renditions[0],
        epoch(),
        &opts,
        &HashMap::new(),
        &mut SequenceBases::default(),
    )
    .unwrap();
    assert_eq!(t.segments.len(), 1);
    assert_eq!(
        t.segments[0].resource.url.as_str(),
        "http://cdn.test/v/subs/de.vtt"
    );
    assert_eq!(t.segments[0].duration, Duration::from_secs(7));

    // Without limits every representation is offered.
    let p = presentation(&m, &DashOptions::default(), epoch()).unwrap();
    assert_eq!(p.tracks[0].renditions.len(), 4);
    // Limits nothing fits: the smallest one.
    let tiny = DashOptions {
        max_video_width: 100,
        ..DashOptions::default()
    };
    let p = presentation(&m, &tiny, epoch()).unwrap();
    assert_eq!(p.tracks[0].renditions.len(), 1);
    assert_eq!(p.tracks[0].renditions[0].id, "v/360");

    // The other audio language is an alternative; the image set is not.
    let alternatives = alternative_tracks(&m, &opts, epoch());
    assert_eq!(alternatives.len(), 1);
    assert_eq!(alternatives[0].id, "fr");
    let p = presentation(&m, &opts, epoch()).unwrap();
    assert_eq!(p.alternatives, alternatives);
    let ids: Vec<&str> = p.tracks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["v", "en", "subs"]);
    assert_eq!(alternatives[0].kind, TrackKind::Audio);
    assert_eq!(
        alternatives[0].renditions[0].language.as_deref(),
        Some("fr")
    );
    // Its timeline can be built like any other.
    let t = timeline(
        &m,
        TrackKind::Audio,
        &alternatives[0].renditions[0],
        epoch(),
        &opts,
        &HashMap::new(),
        &mut SequenceBases::default(),
    )
    .unwrap();
    assert_eq!(urls(&t)[0], "a-fr-1.m4s");
}

#[test]
fn muxed_adaptation_set_is_one_video_track() {
    let m = mpd(&wrap(
        r#"
    <AdaptationSet mimeType="video/mp4">
      <Representation id="av" bandwidth="1" codecs="avc1.64001f,mp4a.40.2">
        <SegmentTemplate media="$Number$.m4s" duration="2"/>
      </Representation>
    </AdaptationSet>"#,
    ));
    let p = presentation(&m, &DashOptions::default(), epoch()).unwrap();
    assert_eq!(p.tracks.len(), 1);
    assert!(p.tracks[0].muxed);
}

#[test]
fn sniffing() {
    let mpd_url = url();
    let m3u8 = Url::parse("http://cdn.test/x.m3u8").unwrap();
    assert!(looks_like_mpd(
        &m3u8,
        b"\xEF\xBB\xBF  <?xml version=\"1.0\"?><MPD/>"
    ));
    assert!(looks_like_mpd(&m3u8, b"\n<MPD xmlns=\"x\">"));
    assert!(looks_like_mpd(&mpd_url, b"garbage"));
    assert!(!looks_like_mpd(&mpd_url, b"#EXTM3U\n"));
    assert!(!looks_like_mpd(&m3u8, b"#EXTM3U\n"));
    assert!(!looks_like_mpd(&m3u8, b"garbage"));
}

#[test]
fn bad_mpds_are_invalid_playlists_naming_the_problem() {
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "empty"),
        ("\u{feff}  \n".into(), "empty"),
        ("\x00\x01garbage".into(), "not XML"),
        ("<!DOCTYPE html><html><body>502</body></html>".into(), "HTML"),
        ("<?xml version=\"1.0\"?><playlist/>".into(), "root element is <playlist>"),
        (
            LIVE.replace("SUGGESTED", "")[..LIVE.len() / 2].to_string(),
            "truncated",
        ),
        ("<MPD><Period></MPD>".into(), "malformed XML"),
        (
            r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"></MPD>"#.into(),
            "no Period",
        ),
        (
            r#"<MPD type="dynamic"><Period/></MPD>"#.into(),
            "availabilityStartTime",
        ),
        (r#"<MPD type="live"><Period/></MPD>"#.into(), "MPD@type"),
        (
            r#"<MPD><Period xlink:href="http://x.test/p.xml" xmlns:xlink="http://www.w3.org/1999/xlink"/></MPD>"#
                .into(),
            "xlink",
        ),
        (
            r#"<MPD mediaPresentationDuration="notaduration"><Period/></MPD>"#.into(),
            "cannot parse",
        ),
    ];
    for (body, needle) in cases {
        match parse_mpd(&url(), body.as_bytes()) {
            Err(e @ MeshError::InvalidPlaylist { .. }) => {
                let text = e.to_string();
                assert!(text.starts_with("invalid playlist: MPD: "), "{text}");
                assert!(text.contains(needle), "{needle:?} not in {text:?}");
            }
            other => panic!("{body:?} gave {other:?}"),
        }
    }

    // Parsed, but nothing to play or unsupported addressing.
    let no_media = mpd(&wrap(
        r#"<AdaptationSet contentType="image"><Representation id="t" bandwidth="1"/></AdaptationSet>"#,
    ));
    let e = presentation(&no_media, &DashOptions::default(), epoch()).unwrap_err();
    assert!(e.to_string().contains("no audio or video"), "{e}");
    for (set, needle) in [
        (
            r#"<Representation id="v" bandwidth="1"><SegmentTemplate media="$Number$.m4s"/></Representation>"#,
            "neither SegmentTimeline nor @duration",
        ),
        (
            r#"<Representation id="v" bandwidth="1"><SegmentTemplate duration="2"/></Representation>"#,
            "without @media",
        ),
        (
            r#"<Representation id="v" bandwidth="1"/>"#,
            "unsupported addressing",
        ),
        (
            r#"<Representation id="v" bandwidth="1"><SegmentTemplate media="$Number%x$.m4s" duration="2"/></Representation>"#,
            "format",
        ),
        (
            r#"<Representation id="v" bandwidth="1"><SegmentTemplate media="$Number$.m4s"><SegmentTimeline><S d="0"/></SegmentTimeline></SegmentTemplate></Representation>"#,
            "S@d is 0",
        ),
    ] {
        let m = mpd(&wrap(&format!(
            r#"<AdaptationSet contentType="video">{set}</AdaptationSet>"#
        )));
        let p = presentation(&m, &DashOptions::default(), epoch()).unwrap();
        let e = timeline(
            &m,
            TrackKind::Video,
            &p.tracks[0].renditions[0],
            epoch(),
            &DashOptions::default(),
            &HashMap::new(),
            &mut SequenceBases::default(),
        )
        .unwrap_err();
        assert!(matches!(e, MeshError::InvalidPlaylist { .. }), "{e:?}");
        assert!(e.to_string().contains(needle), "{needle:?} not in {e}");
    }
    // A static MPD whose number of segments cannot be known.
    let m = mpd(
        r#"<MPD type="static"><Period><AdaptationSet contentType="video"><Representation id="v" bandwidth="1"><SegmentTemplate media="$Number$.m4s" duration="2"/></Representation></AdaptationSet></Period></MPD>"#,
    );
    let p = presentation(&m, &DashOptions::default(), epoch()).unwrap();
    let e = timeline(
        &m,
        TrackKind::Video,
        &p.tracks[0].renditions[0],
        epoch(),
        &DashOptions::default(),
        &HashMap::new(),
        &mut SequenceBases::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("unbounded"), "{e}");
}
