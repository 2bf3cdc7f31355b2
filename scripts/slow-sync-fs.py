#!/usr/bin/env python3
"""A pass-through FUSE file system whose fsync/fdatasync first waits DELAY_MS: storage whose
sync is a network round trip away (an NFS or EFS mount in another zone), for benchmarks on a
host that has only a local disk. With LOOKUP_DELAY_MS, looking up a name that does not exist
waits that long too: NFS mounted with `lookupcache=positive`, as docs/HA.md asks, sends every
such lookup to the server, and the lease fence looks one up after every log sync. Names that
exist are answered from the kernel's cache (FUSE's default 1 s entry and attribute timeouts),
as NFS answers them from its positive cache. Everything else goes straight to BACKING_DIR.

    scripts/slow-sync-fs.sh MOUNT DELAY_MS [LOOKUP_DELAY_MS]   # mounts; umount MOUNT ends it
    DIR=MOUNT scripts/durable-ab.sh ...                          # then benchmark on it

Not for data anyone keeps: it is a measuring aid. Every request is a Python call, so writes
cost more than on a kernel file system; the raw-sync baseline pays that too, and its pwrite
even more per record than the broker's msync of whole pages.
"""
import errno
import os
import sys
import time

from fuse import FUSE, FuseOSError, Operations


class SlowSync(Operations):
    def __init__(self, root, delay_s, lookup_delay_s=0.0):
        self.root, self.delay_s, self.lookup_delay_s = root, delay_s, lookup_delay_s

    def _p(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _os(self, call, *args):
        try:
            return call(*args)
        except OSError as e:
            raise FuseOSError(e.errno or errno.EIO) from e

    def access(self, path, mode):
        if not os.access(self._p(path), mode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._p(path))
        except FileNotFoundError:
            # A miss is never cached (libfuse's negative timeout is 0): each one pays the trip.
            time.sleep(self.lookup_delay_s)
            raise FuseOSError(errno.ENOENT) from None
        except OSError as e:
            raise FuseOSError(e.errno or errno.EIO) from e
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid", "st_blocks")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + self._os(os.listdir, self._p(path))

    def statfs(self, path):
        st = self._os(os.statvfs, self._p(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag",
                "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def mkdir(self, path, mode):
        self._os(os.mkdir, self._p(path), mode)

    def rmdir(self, path):
        self._os(os.rmdir, self._p(path))

    def unlink(self, path):
        self._os(os.unlink, self._p(path))

    def rename(self, old, new):
        self._os(os.rename, self._p(old), self._p(new))

    def link(self, target, source):
        self._os(os.link, self._p(source), self._p(target))

    def symlink(self, target, source):
        self._os(os.symlink, source, self._p(target))

    def readlink(self, path):
        return self._os(os.readlink, self._p(path))

    def chmod(self, path, mode):
        self._os(os.chmod, self._p(path), mode)

    def chown(self, path, uid, gid):
        self._os(os.chown, self._p(path), uid, gid)

    def truncate(self, path, length, fh=None):
        self._os(os.truncate, self._p(path), length)

    def utimens(self, path, times=None):
        self._os(os.utime, self._p(path), times)

    def open(self, path, flags):
        return self._os(os.open, self._p(path), flags)

    def create(self, path, mode, fi=None):
        return self._os(os.open, self._p(path), os.O_RDWR | os.O_CREAT, mode)

    def read(self, path, size, offset, fh):
        return self._os(os.pread, fh, size, offset)

    def write(self, path, data, offset, fh):
        return self._os(os.pwrite, fh, data, offset)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        self._os(os.close, fh)

    def fsync(self, path, datasync, fh):
        time.sleep(self.delay_s)
        self._os(os.fdatasync if datasync else os.fsync, fh)
        return 0

    def fsyncdir(self, path, datasync, fh):
        time.sleep(self.delay_s)
        return 0


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: slow-sync-fs.py BACKING_DIR MOUNT DELAY_MS [LOOKUP_DELAY_MS]")
    backing, mount, delay_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    lookup_delay_ms = float(sys.argv[4]) if len(sys.argv) == 5 else 0.0
    FUSE(SlowSync(os.path.abspath(backing), delay_ms / 1000, lookup_delay_ms / 1000), mount, foreground=True,
         nothreads=False)
