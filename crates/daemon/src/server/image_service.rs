//! The CRI ImageService. The image store (its own crate) will serve it; until
//! then every RPC answers UNIMPLEMENTED naming itself.

use super::unimplemented::cri_service;
use crius_cri_api::v1::image_service_server::ImageService;
use crius_cri_api::v1::*;

pub struct ImageServiceImpl;

cri_service! {
    impl ImageService as "runtime.v1.ImageService" for ImageServiceImpl {}
    not_built {
        ListImages => list_images(ListImagesRequest) -> ListImagesResponse;
        ImageStatus => image_status(ImageStatusRequest) -> ImageStatusResponse;
        PullImage => pull_image(PullImageRequest) -> PullImageResponse;
        RemoveImage => remove_image(RemoveImageRequest) -> RemoveImageResponse;
        ImageFsInfo => image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
    }
    not_built_streams {
        StreamImages => stream_images(StreamImagesRequest) -> StreamImagesStream<StreamImagesResponse>;
    }
}
