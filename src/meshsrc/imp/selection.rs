//! The stream collection and GST_EVENT_SELECT_STREAMS.

use super::*;

/// A track of the stream collection.
pub(super) struct Choice {
    pub(super) stream: gst::Stream,
    pub(super) track: Track,
}

/// The stream collection and the stream selection (GST_EVENT_SELECT_STREAMS).
pub(super) struct Selection {
    pub(super) collection: gst::StreamCollection,
    /// Every stream of the collection.
    pub(super) choices: Vec<Choice>,
    /// The last select-streams event handled.
    pub(super) seqnum: Option<gst::Seqnum>,
    /// A selection whose pads have not all started their new streams yet.
    pub(super) pending: Option<PendingSelection>,
}

pub(super) struct PendingSelection {
    pub(super) seqnum: gst::Seqnum,
    /// Indexes into the outputs of the pads still to start their new stream.
    pub(super) waiting: Vec<usize>,
}

impl MeshSrc {
    /// Handles GST_EVENT_SELECT_STREAMS as adaptivedemux2 does: unknown stream ids refuse
    /// the whole selection; each pad switches to the selected stream of its kind from the
    /// segment after the one it last output, and `streams-selected` follows once every
    /// switched pad has started its new stream. A kind left out keeps its stream (the pads
    /// are fixed once exposed); of several streams of one kind the first one counts.
    pub(super) fn select_streams(&self, ids: &[String], seqnum: gst::Seqnum) -> bool {
        let mut switches = Vec::new();
        let ready = {
            let mut state = lock(&self.state);
            let State::Running {
                outputs,
                selection: Some(selection),
                ..
            } = &mut *state
            else {
                gst::warning!(
                    CAT,
                    imp = self,
                    "select-streams before the stream collection"
                );
                return false;
            };
            if selection.seqnum == Some(seqnum) {
                return true;
            }
            let mut chosen = Vec::new();
            for id in ids {
                let Some(choice) = selection
                    .choices
                    .iter()
                    .find(|c| c.stream.stream_id().is_some_and(|s| s.as_str() == id))
                else {
                    gst::warning!(CAT, imp = self, "select-streams: unknown stream id {id:?}");
                    return false;
                };
                chosen.push(choice);
            }
            selection.seqnum = Some(seqnum);
            let mut waiting = Vec::new();
            for (index, output) in outputs.iter_mut().enumerate() {
                let mut of_kind = chosen.iter().filter(|c| c.track.kind == output.kind);
                let Some(choice) = of_kind.next() else {
                    continue;
                };
                if of_kind.next().is_some() {
                    gst::info!(
                        CAT,
                        imp = self,
                        "{} plays one stream: {:?}",
                        output.ghost.name(),
                        choice.stream.stream_id()
                    );
                }
                if choice.track.id == output.track {
                    continue;
                }
                gst::info!(
                    CAT,
                    imp = self,
                    "{} switches to {:?}",
                    output.ghost.name(),
                    choice.stream.stream_id()
                );
                output.track = choice.track.id.clone();
                switches.push((output.control.clone(), choice.track.clone()));
                // A pad past EOS starts the new stream only after a seek back.
                let eos = output
                    .src
                    .static_pad("src")
                    .is_some_and(|p| p.pad_flags().contains(gst::PadFlags::EOS));
                if !eos {
                    waiting.push(index);
                }
            }
            if waiting.is_empty() {
                selection.pending = None;
                Some(streams_selected(&self.obj(), selection, outputs, seqnum))
            } else {
                selection.pending = Some(PendingSelection { seqnum, waiting });
                None
            }
        };
        for (control, track) in switches {
            control.switch_track(track);
        }
        if let Some(message) = ready {
            let _ = self.obj().post_message(message);
        }
        true
    }
}

/// The stream of the track `output` plays (or switches to).
pub(super) fn stream_for(choices: &[Choice], output: &Output) -> Option<gst::Stream> {
    choices
        .iter()
        .find(|c| c.track.kind == output.kind && c.track.id == output.track)
        .map(|c| c.stream.clone())
}

/// `streams-selected` for the streams the pads now play, answering select-streams `seqnum`.
pub(super) fn streams_selected(
    src: &crate::meshsrc::MeshSrc,
    selection: &Selection,
    outputs: &[Output],
    seqnum: gst::Seqnum,
) -> gst::Message {
    let streams: Vec<gst::Stream> = outputs
        .iter()
        .filter_map(|o| stream_for(&selection.choices, o))
        .collect();
    gst::message::StreamsSelected::builder(&selection.collection)
        .streams(streams)
        .seqnum(seqnum)
        .src(src)
        .build()
}

/// The common part of this presentation's stream ids: the SHA-256 of the manifest URL, as
/// `gst_pad_create_stream_id()` does with a source's URI, so ids are the same every run.
pub(super) fn stream_id_base(location: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(location.as_bytes()))
}

/// The collection's stream for `track`: type, flags, caps from its codec when there is one,
/// and language and name tags.
pub(super) fn stream_of(
    id_base: &str,
    track: &Track,
    rendition: usize,
    selected: bool,
) -> gst::Stream {
    let stream_type = match track.kind {
        TrackKind::Video if track.muxed => gst::StreamType::VIDEO | gst::StreamType::AUDIO,
        TrackKind::Video => gst::StreamType::VIDEO,
        TrackKind::Audio => gst::StreamType::AUDIO,
        TrackKind::Subtitle => gst::StreamType::TEXT,
    };
    let mut flags = gst::StreamFlags::empty();
    if selected {
        flags |= gst::StreamFlags::SELECT;
    }
    if track.kind == TrackKind::Subtitle {
        flags |= gst::StreamFlags::SPARSE;
    }
    let rendition = track.renditions.get(rendition).or(track.renditions.first());
    let caps = rendition
        .and_then(|r| r.codecs.as_deref())
        .and_then(codec_caps);
    let id = format!("{id_base}/{}-{}", track.kind.pad_prefix(), track.id);
    let stream = gst::Stream::new(Some(&id), caps.as_ref(), stream_type, flags);
    let mut tags = gst::TagList::new();
    {
        let tags = tags.get_mut().expect("new tag list is writable");
        if let Some(lang) = rendition.and_then(|r| r.language.as_deref()) {
            let primary = lang.split(['-', '_']).next().unwrap_or(lang);
            if (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic())
            {
                let code = primary.to_ascii_lowercase();
                tags.add::<gst::tags::LanguageCode>(&code.as_str(), gst::TagMergeMode::Replace);
            }
            if !lang.eq_ignore_ascii_case(primary) || primary.len() > 3 {
                tags.add::<gst::tags::LanguageName>(&lang, gst::TagMergeMode::Replace);
            }
        }
        if let Some(name) = rendition.and_then(|r| r.name.as_deref()) {
            tags.add::<gst::tags::Title>(&name, gst::TagMergeMode::Replace);
        }
    }
    if tags.n_tags() > 0 {
        stream.set_tags(Some(&tags));
    }
    stream
}
