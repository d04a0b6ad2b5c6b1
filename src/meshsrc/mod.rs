//! `meshsrc`: a bin with one sometimes pad per track, each fed by an internal stream source.

use gst::glib;
use gst::prelude::*;

mod imp;
mod streamsrc;

glib::wrapper! {
    pub struct MeshSrc(ObjectSubclass<imp::MeshSrc>)
        @extends gst::Bin, gst::Element, gst::Object,
        @implements gst::ChildProxy, gst::URIHandler;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "meshsrc",
        gst::Rank::PRIMARY,
        MeshSrc::static_type(),
    )
}
