//! The internal push source behind one meshsrc pad. Not registered as a factory.

use crate::session::TrackOutput;
use gst::glib;
use gst::subclass::prelude::*;

mod imp;

glib::wrapper! {
    pub struct StreamSrc(ObjectSubclass<imp::StreamSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

impl StreamSrc {
    pub fn new(
        name: &str,
        output: TrackOutput,
        stream: gst::Stream,
        group_id: gst::GroupId,
    ) -> Self {
        let src: StreamSrc = glib::Object::builder().property("name", name).build();
        src.imp().configure(output, stream, group_id);
        src
    }
}
