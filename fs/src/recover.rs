//! Publishing, at mount, the files a previous daemon made owed and did not publish
//! (see [`crate::owed`]).

use std::fs::File;

use crate::depfs::DepFs;
use crate::namespace::touch_parent;
use crate::staging::remove_quietly;
use crate::types::now_ms;

impl DepFs {
    /// Publishes the files a previous daemon made owed and did not publish (it was
    /// killed): run at mount, before the kernel is served. Returns how many were
    /// published; one that cannot be (its note unreadable, its content short after a
    /// power loss) is left in place with an error in the log.
    pub fn publish_left_over(&self) -> std::io::Result<usize> {
        let store_error = |e: depfs_store::StoreError| std::io::Error::other(e);
        let mut published = 0;
        for left in self.owed.left_over()? {
            let span = tracing::info_span!("left_over", number = left.number);
            let _entered = span.enter();
            let note = match left.note {
                Ok(note) => note,
                Err(why) => {
                    tracing::error!(%why, "unreadable note of a closed file; left in the staging directory");
                    continue;
                }
            };
            let file = match File::open(&left.data) {
                Ok(file) => file,
                Err(e) => {
                    tracing::error!(path = %left.data.display(), error = %e, "content of a closed file missing");
                    continue;
                }
            };
            let len = file.metadata()?.len();
            if len != note.len {
                // Only a machine crash before the disk had the bytes (close does not
                // promise more): publishing it would show a file never written.
                tracing::error!(path = %note.path, len, expected = note.len, "content of a closed file incomplete; not published");
                continue;
            }
            let (content, _pin) = self
                .store
                .write_content_from(&file, len)
                .map_err(store_error)?;
            let mut tx = self.store.transaction();
            let current = tx.get(&note.path).map_err(store_error)?;
            if current
                .as_ref()
                .is_some_and(|n| n.meta == note.meta && n.content == content)
            {
                // Published already; only the note's removal was cut short.
                self.owed.forget(left.number);
                remove_quietly(&left.data);
                continue;
            }
            let is_file = matches!(current, Some(n) if n.meta.kind == depfs_proto::Kind::File);
            if note.new_file || is_file {
                let ctime = note.meta.ctime;
                tx.put_based(
                    note.path.clone(),
                    depfs_proto::Node {
                        meta: note.meta,
                        content,
                    },
                    note.started_from,
                );
                if note.new_file {
                    touch_parent(&mut tx, &note.path, ctime)
                        .map_err(|e| std::io::Error::from_raw_os_error(e.0))?;
                }
                tx.commit(now_ms(), depfs_store::Durability::Machine)
                    .map_err(store_error)?;
                tracing::info!(path = %note.path, len, "published a file closed before the daemon stopped");
                published += 1;
            }
            self.owed.forget(left.number);
            remove_quietly(&left.data);
        }
        Ok(published)
    }
}
