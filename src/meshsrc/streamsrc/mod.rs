//! The internal push source behind one meshsrc pad. Not registered as a factory.

use crate::session::TrackOutput;
use gst::glib;
use gst::subclass::prelude::*;

mod imp;

pub use imp::PadStreams;

glib::wrapper! {
    pub struct StreamSrc(ObjectSubclass<imp::StreamSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

impl StreamSrc {
    pub fn new(name: &str, output: TrackOutput, streams: PadStreams) -> Self {
        let src: StreamSrc = glib::Object::builder().property("name", name).build();
        src.imp().configure(output, streams);
        src
    }
}
