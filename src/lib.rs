//! `translation-status`: wait for video-translation jobs. The SDK lands in the next commits.
