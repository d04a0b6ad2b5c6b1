//! Self-tests of the test harness (origin server, fixtures, expected bytes).
//! These do not use meshsrc.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Minimal HTTP/1.1 client over one (keep-alive) connection.
fn request(
    stream: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.get_mut().write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        stream.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if method != "HEAD" {
        let len: usize = resp
            .header("content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        resp.body = vec![0; len];
        stream.read_exact(&mut resp.body).unwrap();
    }
    resp
}

fn connect(origin: &Origin) -> BufReader<TcpStream> {
    let s = TcpStream::connect(origin.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

#[test]
fn harness_origin_get_head_range() {
    let env = Env::new();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir_all(env.path("d")).unwrap();
    std::fs::write(env.path("d/a.ts"), &data).unwrap();
    std::fs::write(env.path("d/p.m3u8"), "#EXTM3U\n").unwrap();
    let o = &env.origin;
    let mut c = connect(o);

    let r = request(&mut c, "GET", "/d/a.ts", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-type"), Some("video/mp2t"));
    assert_eq!(r.header("content-length"), Some("1000"));

    // same connection (keep-alive)
    let r = request(&mut c, "HEAD", "/d/a.ts", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));

    let r = request(&mut c, "GET", "/d/a.ts", &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));

    let r = request(&mut c, "GET", "/d/a.ts?x=1", &[("Range", "bytes=990-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[990..]);
    assert_eq!(r.header("content-range"), Some("bytes 990-999/1000"));

    let r = request(&mut c, "GET", "/d/a.ts", &[("Range", "bytes=-5")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[995..]);

    let r = request(&mut c, "GET", "/d/a.ts", &[("Range", "bytes=1000-")]);
    assert_eq!(r.status, 416);

    let r = request(&mut c, "GET", "/d/p.m3u8", &[]);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let r = request(&mut c, "GET", "/d/missing.ts", &[]);
    assert_eq!(r.status, 404);
    let r = request(&mut c, "GET", "/../etc/passwd", &[]);
    assert_ne!(r.status, 200);

    let log = o.log();
    assert_eq!(log.len(), 9);
    assert_eq!(log[3].path, "/d/a.ts?x=1");
    assert_eq!(log[3].path_only(), "/d/a.ts");
    assert_eq!(log[3].query(), Some("x=1"));
    assert_eq!(log[2].range.as_deref(), Some("bytes=10-19"));
    assert_eq!(log[2].body_bytes, 10);
    assert_eq!(log[1].body_bytes, 0);
    let data_bytes: u64 = 1000 + 10 + 10 + 5 + 8;
    let err_bytes: u64 = log
        .iter()
        .filter(|r| r.status >= 400)
        .map(|r| r.body_bytes)
        .sum();
    assert_eq!(o.bytes_sent(), data_bytes + err_bytes);
}

#[test]
fn harness_origin_faults_and_redirect() {
    let env = Env::new();
    std::fs::write(env.path("a.ts"), b"0123456789").unwrap();
    let o = &env.origin;
    let mut c = connect(o);

    o.fail_next("/a.ts", 2, 503);
    assert_eq!(request(&mut c, "GET", "/a.ts", &[]).status, 503);
    assert_eq!(request(&mut c, "GET", "/a.ts?q=1", &[]).status, 503);
    assert_eq!(request(&mut c, "GET", "/a.ts", &[]).status, 200);

    o.set_status("a.ts", 404);
    assert_eq!(request(&mut c, "GET", "/a.ts", &[]).status, 404);
    o.clear_status("/a.ts");
    assert_eq!(request(&mut c, "GET", "/a.ts", &[]).status, 200);

    o.set_body("/bad.m3u8", "<html>nope</html>", "text/html");
    let r = request(&mut c, "GET", "/bad.m3u8", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<html>nope</html>");
    assert_eq!(r.header("content-type"), Some("text/html"));
    o.set_body("/empty.m3u8", "", "application/vnd.apple.mpegurl");
    let r = request(&mut c, "GET", "/empty.m3u8", &[]);
    assert_eq!((r.status, r.body.len()), (200, 0));

    let r = request(&mut c, "GET", "/redirect/a.ts?t=1", &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/a.ts?t=1"));

    o.set_delay("/a.ts", Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(request(&mut c, "GET", "/a.ts", &[]).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(o.requests_for("/a.ts").len(), 6);
}

#[test]
fn harness_origin_live_window() {
    let env = Env::new();
    // Synthetic VOD with 4 segments.
    std::fs::create_dir_all(env.path("vod")).unwrap();
    let mut pl = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n",
    );
    for i in 0..4 {
        std::fs::write(env.path(&format!("vod/s{i}.ts")), vec![i as u8; 100 + i]).unwrap();
        pl.push_str(&format!("#EXTINF:2.0,\ns{i}.ts\n"));
    }
    pl.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(env.path("vod/p.m3u8"), pl).unwrap();
    let o = &env.origin;
    o.add_live_playlist(
        "live.m3u8",
        &env.path("vod/p.m3u8"),
        LiveConfig {
            window: 3,
            start_segments: 5,
            segment_duration: Duration::from_millis(400),
            ..Default::default()
        },
    );
    let mut c = connect(o);
    let r = request(&mut c, "GET", "/live.m3u8", &[]);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    let p = match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("bad live playlist {other:?}\n{text}"),
    };
    assert_eq!(p.media_sequence, 2, "{text}");
    assert_eq!(p.segments.len(), 3);
    assert!(!p.end_list);
    assert_eq!(p.target_duration, 2);
    // seq 4 wraps to source 0 -> discontinuity
    assert!(p.segments[2].discontinuity, "{text}");
    assert_eq!(p.segments[2].uri, o.live_segment_path("live.m3u8", 4));
    let r = request(&mut c, "GET", &o.live_segment_path("live.m3u8", 4), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, vec![0u8; 100]);
    assert_eq!(o.live_segment_bytes("live.m3u8", 7), vec![3u8; 103]);
    // not yet available
    let r = request(&mut c, "GET", &o.live_segment_path("live.m3u8", 9), &[]);
    assert_eq!(r.status, 404);

    std::thread::sleep(Duration::from_millis(900));
    let r = request(&mut c, "GET", "/live.m3u8", &[]);
    let p = match m3u8_rs::parse_playlist_res(&r.body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        _ => panic!(),
    };
    assert_eq!(p.media_sequence, 4);
    assert_eq!(p.discontinuity_sequence, 0);
    let k = o.end_live("live.m3u8");
    assert_eq!(k, 7);
    std::thread::sleep(Duration::from_millis(500));
    let r = request(&mut c, "GET", "/live.m3u8", &[]);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4"), "{text}");
    let snaps = o.live_snapshots("live.m3u8");
    assert_eq!(snaps.len(), 3);
    assert_eq!((snaps[0].media_sequence, snaps[0].end), (2, 5));
    assert_eq!((snaps[1].media_sequence, snaps[1].end), (4, 7));
    assert!(snaps[2].end_list);
    assert_eq!(o.live_segments_requested("live.m3u8"), vec![4]);
}

#[test]
fn harness_fixture_ts_hlssink2() {
    let env = Env::new();
    let s = hls_ts_vod(&env.path("ts"));
    let e = expected_media(&s.playlist);
    assert_eq!(e.segments.len(), 4);
    assert!(e.init.is_none());
    assert!(
        (e.total_duration() - 8.0).abs() < 0.1,
        "{}",
        e.total_duration()
    );
    assert!(
        e.segments
            .iter()
            .all(|s| s.len() > 1000 && s[0] == 0x47 && s.len() % 188 == 0)
    );
    assert_eq!(e.segment_at(5.0), 2);
}

#[test]
fn harness_fixture_fmp4_byterange() {
    let env = Env::new();
    let f = hls_fmp4_vod(&env.path("fmp4"));
    let e = expected_media(&f.playlist);
    assert_eq!(e.segments.len(), 4);
    let init = e.init.as_ref().expect("init");
    assert_eq!(&init[4..8], b"ftyp");
    let b = hls_byterange_vod(&env.path("br"));
    let e = expected_media(&b.playlist);
    assert_eq!(e.segments.len(), 4);
    let whole = std::fs::read(env.path("br/playlist.ts")).unwrap();
    assert_eq!(e.all(), whole, "byte ranges should tile the single file");
}

#[test]
fn harness_fixture_aes() {
    let env = Env::new();
    let s = hls_aes_vod(&env.path("aes_seq"), AesIv::MediaSequence);
    let e = expected_media(&s.playlist);
    assert_eq!(e.media_sequence, 3);
    let plain: Vec<u8> = s
        .plain_segments
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(e.all(), plain);
    // IV really is the sequence number: decrypting with IV 0 must differ.
    let enc0 = std::fs::read(env.path("aes_seq/enc_000.ts")).unwrap();
    let wrong = openssl_aes(true, &AES_KEY, &format!("{:032x}", 0), &enc0);
    assert_ne!(wrong, e.segments[0]);

    let s = hls_aes_vod(&env.path("aes_iv"), AesIv::Explicit);
    let e = expected_media(&s.playlist);
    assert_eq!(e.segments.len(), 3);
    for seg in &e.segments {
        assert_eq!(seg[0], 0x47);
        assert_eq!(seg.len() % 188, 0);
    }
}

#[test]
fn harness_fixture_master_and_alt_audio() {
    let env = Env::new();
    let s = hls_master_three_variants(&env.path("m3"));
    let sizes: Vec<usize> = s.media.iter().map(|m| expected_bytes(m).len()).collect();
    assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2], "{sizes:?}");
    let a = hls_alt_audio(&env.path("alt"));
    assert_eq!(a.media.len(), 2);
    assert!(!expected_bytes(&a.media[1]).is_empty());
}

#[test]
fn harness_rewrite_with_query() {
    let env = Env::new();
    std::fs::write(
        env.path("p.m3u8"),
        "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2,\na.m4s\n#EXTINF:2,\nb.m4s?x=1\n",
    )
    .unwrap();
    let p = rewrite_with_query(&env.path("p.m3u8"), "q.m3u8", "token=abc");
    let t = std::fs::read_to_string(p).unwrap();
    assert_eq!(
        t,
        "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4?token=abc\"\n#EXTINF:2,\na.m4s?token=abc\n#EXTINF:2,\nb.m4s?x=1&token=abc\n"
    );
}
