//! Session errors as GStreamer errors and warnings, with their details.

use super::*;

impl MeshSrc {
    pub(super) fn post_mesh_error(&self, e: &MeshError) {
        gst::warning!(CAT, imp = self, "error: {e}");
        let details = |status: u16, url: &str| {
            gst::Structure::builder("mesh-error-details")
                .field("http-status-code", status as u32)
                .field("uri", url)
                .build()
        };
        match e {
            MeshError::HttpStatus { url, status } => {
                let details = details(*status, url);
                match status {
                    404 | 410 => {
                        gst::element_imp_error!(self, gst::ResourceError::NotFound, ("{}", e), ["{:?}", e], details: details)
                    }
                    401 | 403 => {
                        gst::element_imp_error!(self, gst::ResourceError::NotAuthorized, ("{}", e), ["{:?}", e], details: details)
                    }
                    _ => {
                        gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{}", e), ["{:?}", e], details: details)
                    }
                }
            }
            MeshError::Connect { .. } => {
                gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{}", e), ["{:?}", e])
            }
            MeshError::Timeout { .. } | MeshError::Read { .. } => {
                gst::element_imp_error!(self, gst::ResourceError::Read, ("{}", e), ["{:?}", e])
            }
            MeshError::InvalidPlaylist { .. } => {
                gst::element_imp_error!(self, gst::StreamError::Decode, ("{}", e), ["{:?}", e])
            }
            MeshError::Key { .. } | MeshError::Decrypt { .. } => {
                gst::element_imp_error!(self, gst::StreamError::Decrypt, ("{}", e), ["{:?}", e])
            }
            MeshError::Unsupported(_) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{}", e), ["{:?}", e])
            }
            MeshError::NoDecoder { .. } => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::CodecNotFound,
                    ("{}", e),
                    ["{:?}", e]
                )
            }
            MeshError::Tracker { .. } | MeshError::Mesh(_) => {
                gst::element_imp_error!(self, gst::ResourceError::Failed, ("{}", e), ["{:?}", e])
            }
            MeshError::InvalidLocation { .. } => {
                gst::element_imp_error!(self, gst::ResourceError::Settings, ("{}", e), ["{:?}", e])
            }
        }
    }
}
