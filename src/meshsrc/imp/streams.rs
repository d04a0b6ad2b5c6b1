//! The pads the bin exposes for the session's tracks, their stream starts and the flow
//! combination of not-linked.

use super::*;

impl MeshSrc {
    /// Adds one internal source and ghost pad per track, posts the stream collection (every
    /// track, the alternatives included) and the initial selection, then signals
    /// no-more-pads.
    pub(super) fn expose(
        &self,
        generation: u64,
        tracks: Vec<TrackOutput>,
        alternatives: Vec<Track>,
    ) {
        let obj = self.obj();
        let group_id = gst::GroupId::next();
        let location = lock(&self.settings).location.clone().unwrap_or_default();
        let id_base = stream_id_base(&location);

        // The collection: each pad's track, then the tracks a selection can switch it to.
        let mut choices = Vec::new();
        for t in &tracks {
            choices.push(Choice {
                stream: stream_of(&id_base, &t.track, t.initial_rendition, true),
                track: t.track.clone(),
            });
            for alt in alternatives.iter().filter(|a| a.kind == t.kind) {
                if choices
                    .iter()
                    .any(|c| c.track.kind == alt.kind && c.track.id == alt.id)
                {
                    continue;
                }
                choices.push(Choice {
                    stream: stream_of(&id_base, alt, alt.default_rendition, false),
                    track: alt.clone(),
                });
            }
        }
        let collection = gst::StreamCollection::builder(Some(&location))
            .streams(choices.iter().map(|c| c.stream.clone()))
            .build();
        // Several pads of one stream each: answer decodebin3's SELECTABLE query and put the
        // whole collection on every pad, as adaptivedemux2 does. A pad a demuxer reads
        // downstream still brings that demuxer's collection: see StartWatch.
        let selectable = tracks.len() > 1 && tracks.iter().all(|t| !t.track.muxed);

        let kinds: Vec<TrackKind> = tracks.iter().map(|t| t.kind).collect();
        let (start_watch, turns) = match StartWatch::for_playbin3(obj.upcast_ref(), &kinds) {
            Some((watch, turns)) => (Some(watch), turns),
            None => (None, vec![None; kinds.len()]),
        };
        let presentation = Arc::new(PresentationControl::new(
            tracks.iter().map(|t| (t.kind, t.control.clone())).collect(),
            start_watch.as_ref().map(|w| w.order.clone()),
        ));
        let flows = match &*lock(&self.state) {
            State::Running { flows, .. } => flows.clone(),
            State::Stopped => return,
        };
        let mut counters = [0u32; 3];
        let mut outputs = Vec::new();
        let mut initial_choices = Vec::new();
        for (track, turn) in tracks.into_iter().zip(turns) {
            let slot = match track.kind {
                TrackKind::Video => 0,
                TrackKind::Audio => 1,
                TrackKind::Subtitle => 2,
            };
            let name = format!("{}_{:02}", track.kind.pad_prefix(), counters[slot]);
            counters[slot] += 1;
            if let Some(rendition) = track.track.renditions.get(track.initial_rendition) {
                initial_choices.push((name.clone(), rendition.clone()));
            }
            let streams = choices
                .iter()
                .filter(|c| c.track.kind == track.kind)
                .map(|c| (c.track.id.clone(), c.stream.clone()))
                .collect();
            let kind = track.kind;
            let control = track.control.clone();
            let track_id = track.track.id.clone();
            let src = StreamSrc::new(
                &format!("{name}-src"),
                track,
                PadStreams {
                    streams,
                    collection: collection.clone(),
                    group_id,
                    selectable,
                    presentation: presentation.clone(),
                    turn,
                },
            );
            let templ = obj
                .pad_template(&format!("{}_%02u", kind.pad_prefix()))
                .expect("template exists");
            let pad_flows = flows.clone();
            let pad_presentation = presentation.clone();
            let slot = flows.add_pad();
            let ghost = gst::GhostPad::builder_from_template(&templ)
                .name(name.as_str())
                .proxy_pad_chain_function(move |pad, parent, buffer| {
                    let result = gst::ProxyPad::chain_default(pad, parent, buffer);
                    if kind != TrackKind::Subtitle {
                        pad_presentation.mark_media_started();
                    }
                    pad_flows.combine(slot, result)
                })
                .build();
            outputs.push(Output {
                src,
                ghost,
                kind,
                control,
                track: track_id,
            });
        }
        let selected: Vec<gst::Stream> = outputs
            .iter()
            .filter_map(|o| stream_for(&choices, o))
            .collect();
        // Register the outputs first so stop() removes them even if we are interrupted here.
        let ghosts: Vec<gst::GhostPad> = outputs.iter().map(|o| o.ghost.clone()).collect();
        let srcs: Vec<StreamSrc> = outputs.iter().map(|o| o.src.clone()).collect();
        {
            let mut state = lock(&self.state);
            match &mut *state {
                State::Running {
                    generation: g,
                    outputs: slot,
                    selection,
                    presentation: slot_presentation,
                    start_watch: slot_start_watch,
                    ..
                } if *g == generation => {
                    slot.extend(outputs);
                    *slot_presentation = presentation;
                    *slot_start_watch = start_watch;
                    *selection = Some(Selection {
                        collection: collection.clone(),
                        choices,
                        seqnum: None,
                        pending: None,
                    });
                }
                _ => return,
            }
        }
        for (index, (src, ghost)) in srcs.iter().zip(&ghosts).enumerate() {
            let target = src.static_pad("src").expect("push sources have a src pad");
            let exposed = obj
                .add(src)
                .and_then(|_| ghost.set_target(Some(&target)))
                .and_then(|_| ghost.set_active(true))
                .and_then(|_| obj.add_pad(ghost));
            if let Err(e) = exposed {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Pad,
                    ("Cannot expose pad {}: {}", ghost.name(), e)
                );
                return;
            }
            self.watch_stream_starts(&target, index);
        }
        let _ = obj.post_message(
            gst::message::StreamCollection::builder(&collection)
                .src(&*obj)
                .build(),
        );
        // The default selection, as adaptivedemux2 announces it.
        let _ = obj.post_message(
            gst::message::StreamsSelected::builder(&collection)
                .streams(selected)
                .src(&*obj)
                .build(),
        );
        // Posted before any pad runs, so it always precedes the data.
        for (pad_name, rendition) in &initial_choices {
            self.post_variant_changed(pad_name, rendition, "initial");
        }
        self.post_statistics_at_eos(&ghosts);
        for src in &srcs {
            let _ = src.sync_state_with_parent();
        }
        obj.no_more_pads();
    }

    /// Completes a pending selection when a switched pad starts its new stream.
    pub(super) fn watch_stream_starts(&self, pad: &gst::Pad, index: usize) {
        let weak = self.obj().downgrade();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && let gst::EventView::StreamStart(start) = event.view()
                && let Some(obj) = weak.upgrade()
            {
                obj.imp().stream_started(index, start.stream_id());
            }
            gst::PadProbeReturn::Ok
        });
    }

    pub(super) fn stream_started(&self, index: usize, stream_id: &str) {
        let message = {
            let mut state = lock(&self.state);
            let State::Running {
                outputs,
                selection: Some(selection),
                ..
            } = &mut *state
            else {
                return;
            };
            let Some(pending) = &mut selection.pending else {
                return;
            };
            let expected = outputs
                .get(index)
                .and_then(|o| stream_for(&selection.choices, o));
            if expected.and_then(|s| s.stream_id()).as_deref() != Some(stream_id) {
                return;
            }
            pending.waiting.retain(|i| *i != index);
            if !pending.waiting.is_empty() {
                return;
            }
            let seqnum = pending.seqnum;
            selection.pending = None;
            streams_selected(&self.obj(), selection, outputs, seqnum)
        };
        let _ = self.obj().post_message(message);
    }
}

/// Which pads' last push found nobody linked downstream, so that one pad nobody links (a text
/// track under playbin3, audio under `meshsrc ! decodebin`) never stops the others, as
/// adaptivedemux2's flow combiner does. Only not-linked is combined: each pad has its own
/// streaming thread, so a flushing or ended pad stops itself alone.
#[derive(Debug, Default)]
pub(super) struct NotLinked {
    pub(super) pads: Mutex<Vec<bool>>,
}

impl NotLinked {
    /// A slot for one more pad.
    pub(super) fn add_pad(&self) -> usize {
        let mut pads = lock(&self.pads);
        pads.push(false);
        pads.len() - 1
    }

    pub(super) fn combine(
        &self,
        slot: usize,
        result: Result<gst::FlowSuccess, gst::FlowError>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let not_linked = result == Err(gst::FlowError::NotLinked);
        let mut pads = lock(&self.pads);
        if let Some(p) = pads.get_mut(slot) {
            *p = not_linked;
        }
        if not_linked && pads.iter().any(|p| !p) {
            return Ok(gst::FlowSuccess::Ok);
        }
        result
    }
}

/// Whether the registry has a decoder for a codec family (`avc`, `aac`, …); families it
/// cannot name caps for (text) count as decodable.
pub(super) fn decoder_exists(family: &str) -> bool {
    let caps = match family {
        "avc" => gst::Caps::new_empty_simple("video/x-h264"),
        "hevc" | "dolby-vision" => gst::Caps::new_empty_simple("video/x-h265"),
        "vp9" => gst::Caps::new_empty_simple("video/x-vp9"),
        "vp8" => gst::Caps::new_empty_simple("video/x-vp8"),
        "av1" => gst::Caps::new_empty_simple("video/x-av1"),
        "aac" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .build(),
        "mp3" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 1i32)
            .field("layer", 3i32)
            .build(),
        "ac3" => gst::Caps::new_empty_simple("audio/x-ac3"),
        "eac3" => gst::Caps::new_empty_simple("audio/x-eac3"),
        "opus" => gst::Caps::new_empty_simple("audio/x-opus"),
        "flac" => gst::Caps::new_empty_simple("audio/x-flac"),
        _ => return true,
    };
    gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::MARGINAL)
        .iter()
        .any(|f| f.can_sink_any_caps(&caps))
}

/// Elementary caps for a single RFC 6381 codec string, as dashdemux2 gives its tracks;
/// None for lists (muxed content) and unknown codecs.
pub(super) fn codec_caps(codecs: &str) -> Option<gst::Caps> {
    let mut list = codecs.split(',').map(str::trim).filter(|c| !c.is_empty());
    let codec = list.next()?;
    if list.next().is_some() {
        return None;
    }
    let (fourcc, rest) = codec.split_once('.').unwrap_or((codec, ""));
    let caps = match fourcc {
        "avc1" | "avc3" => gst::Caps::builder("video/x-h264")
            .field(
                "stream-format",
                if fourcc == "avc1" { "avc" } else { "avc3" },
            )
            .field("alignment", "au")
            .build(),
        "hvc1" | "hev1" => gst::Caps::builder("video/x-h265")
            .field("stream-format", fourcc)
            .field("alignment", "au")
            .build(),
        "vp09" => gst::Caps::new_empty_simple("video/x-vp9"),
        "vp08" | "vp8" => gst::Caps::new_empty_simple("video/x-vp8"),
        "av01" => gst::Caps::new_empty_simple("video/x-av1"),
        "mp4a" if matches!(rest, "69" | "6B" | "6b" | "40.34") => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 1i32)
            .field("layer", 3i32)
            .build(),
        "mp4a" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .build(),
        "mp3" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 1i32)
            .field("layer", 3i32)
            .build(),
        "ac-3" => gst::Caps::new_empty_simple("audio/x-ac3"),
        "ec-3" => gst::Caps::new_empty_simple("audio/x-eac3"),
        "opus" | "Opus" => gst::Caps::new_empty_simple("audio/x-opus"),
        "flac" | "fLaC" => gst::Caps::new_empty_simple("audio/x-flac"),
        "wvtt" => gst::Caps::new_empty_simple("application/x-subtitle-vtt"),
        "stpp" => gst::Caps::new_empty_simple("application/ttml+xml"),
        _ => return None,
    };
    Some(caps)
}

/// GStreamer 1.22's playbin3 deselects a stream when decodebin3's `streams-selected` for
/// an earlier partial collection reaches it after that stream's output was linked: the
/// output is left unlinked and preroll never ends. Every pad here that needs a demuxer
/// downstream brings its own collection, and the pads used to start together. Under
/// playbin3 they therefore start one after another: a pad pushes its first buffer once
/// the pad before it has its decoded output, and that output's first event (which follows
/// decodebin3's `streams-selected` and playbin3's handling of it, in the same thread)
/// waits until the next pad's output is exposed, so that no output prerolls alone.
/// 1.24 reworked decodebin3's collections; there every pad starts at once.
pub(super) struct StartWatch {
    pub(super) order: Arc<StartOrder>,
    uridecodebin: gst::Element,
    handler: Option<glib::SignalHandlerId>,
}

/// The longest a decoded output waits for the next pad's.
const NEXT_OUTPUT_WAIT: Duration = Duration::from_secs(3);

/// playbin3's `flags` for video, audio and text.
const PLAY_FLAG_VIDEO: u32 = 1;
const PLAY_FLAG_AUDIO: u32 = 1 << 1;
const PLAY_FLAG_TEXT: u32 = 1 << 2;

impl StartWatch {
    /// The watch and each pad's turn, when the element runs in playbin3 on GStreamer 1.22
    /// with two pads or more that playbin3 plays (its `flags`).
    fn for_playbin3(
        meshsrc: &gst::Element,
        kinds: &[TrackKind],
    ) -> Option<(StartWatch, Vec<Option<usize>>)> {
        let (major, minor, _, _) = gst::version();
        if (major, minor) >= (1, 24) {
            return None;
        }
        let mut ancestor = meshsrc.parent();
        let (mut playbin, mut uridecodebin) = (None, None);
        while let Some(object) = ancestor {
            let bin = object.downcast::<gst::Element>().ok()?;
            // By type: `playbin` is playbin3 too when USE_PLAYBIN3 is set.
            match bin.type_().name() {
                "GstPlayBin3" => playbin = Some(bin.clone()),
                "GstURIDecodeBin3" => uridecodebin = Some(bin.clone()),
                _ => {}
            }
            ancestor = bin.parent();
        }
        let flags = playbin?
            .property_value("flags")
            .transform::<u32>()
            .ok()?
            .get::<u32>()
            .ok()?;
        let played = |kind: &TrackKind| {
            let flag = match kind {
                TrackKind::Video => PLAY_FLAG_VIDEO,
                TrackKind::Audio => PLAY_FLAG_AUDIO,
                TrackKind::Subtitle => PLAY_FLAG_TEXT,
            };
            flags & flag != 0
        };
        let mut next = 0;
        let turns: Vec<Option<usize>> = kinds
            .iter()
            .map(|kind| {
                played(kind).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        if next < 2 {
            return None;
        }
        let order = Arc::new(StartOrder::new(next));
        let uridecodebin = uridecodebin?;
        let exposing = order.clone();
        let handler = uridecodebin.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            exposing.output_exposed();
            let order = exposing.clone();
            pad.add_probe(
                gst::PadProbeType::EVENT_DOWNSTREAM
                    | gst::PadProbeType::BUFFER
                    | gst::PadProbeType::BUFFER_LIST,
                move |pad, info| {
                    // Only the streaming thread waits: an out-of-band event (a flush from a
                    // seek) passes and leaves the probe for the first serialized one.
                    if let Some(gst::PadProbeData::Event(event)) = &info.data
                        && !event.is_serialized()
                    {
                        return gst::PadProbeReturn::Ok;
                    }
                    if let Some(seen) = order.release_next() {
                        wait_for_next_output(pad, &order, seen);
                    }
                    gst::PadProbeReturn::Remove
                },
            );
        });
        Some((
            StartWatch {
                order,
                uridecodebin,
                handler: Some(handler),
            },
            turns,
        ))
    }
}

/// Blocks the streaming thread of `pad` until the player exposed more than `seen` outputs,
/// the pad flushes, the element stops or [`NEXT_OUTPUT_WAIT`] passes.
fn wait_for_next_output(pad: &gst::Pad, order: &StartOrder, seen: usize) {
    let deadline = std::time::Instant::now() + NEXT_OUTPUT_WAIT;
    RUNTIME.block_on(async {
        while std::time::Instant::now() < deadline
            && !pad.pad_flags().contains(gst::PadFlags::FLUSHING)
        {
            let slice = Duration::from_millis(50);
            if tokio::time::timeout(slice, order.wait_exposed_beyond(seen))
                .await
                .is_ok()
            {
                return;
            }
        }
    });
}

impl Drop for StartWatch {
    fn drop(&mut self) {
        self.order.stop();
        if let Some(handler) = self.handler.take() {
            self.uridecodebin.disconnect(handler);
        }
    }
}
