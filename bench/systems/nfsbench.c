/*
 * nfsbench: a userspace NFS workload client (libnfs sync API), for comparing
 * depfs with an NFS server on a machine that has no kernel NFS client.
 *
 * It mounts nfs://SERVER/EXPORT with libnfs, works in a fresh directory
 * EXPORT/<prefix> that it removes at the end, and prints one JSON object per
 * measured figure on stdout:
 *
 *   {"system":"nfs-ganesha (libnfs)","workload":"create","unit":"files/s","value":1234.5,...}
 *
 * Workloads (-w, comma separated; default all):
 *   small  create (open+write+close), stat, read (open+read+close), delete of
 *          N files of S bytes spread over D directories            [files/s]
 *   seq    sequential write of M MiB in 1 MiB writes then close,
 *          sequential read of it in 1 MiB reads                     [GB/s, 1e9 B/s]
 *   rand   R reads of 4 KiB at random 4 KiB-aligned offsets of the
 *          M MiB file                            [reads/s, p50 and p99 in us]
 *   tree   (-t SRCDIR; not part of "all") every directory and regular file
 *          under the local SRCDIR is loaded into memory (untimed), then
 *          written into the work directory (mkdir of every directory, parents
 *          first; then create+write+close of every file: files under 1 MiB
 *          first, then the larger ones, each group in path order), read back
 *          (open+read+close, compared byte for byte) and removed
 *          (unlink, rmdir)                         [tree_write, tree_read,
 *                                                   tree_remove: seconds]
 *
 * Every libnfs call is checked; on error it prints the call, the path and
 * nfs_get_error() on stderr and exits 1. Timing uses CLOCK_MONOTONIC.
 *
 * Build: bench/systems/build-nfsbench.sh OUT   (cc -O2 ... -lnfs)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw-nfs.h>  /* NFS_V3 */
#include <nfsc/libnfs-raw-nfs4.h> /* NFS_V4 */

static struct nfs_context *nfs;
static const char *sys_label = "nfs-ganesha (libnfs)";
static int nfs_version = 3;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die_nfs(const char *call, const char *path, int rc)
{
	const char *msg = nfs ? nfs_get_error(nfs) : NULL;
	fprintf(stderr, "nfsbench: %s(%s) failed: %s (rc=%d: %s)\n", call,
		path ? path : "", msg && *msg ? msg : "no libnfs message", rc,
		rc < 0 ? strerror(-rc) : "unexpected result");
	exit(1);
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "nfsbench: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "nfsbench: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return p;
}

static void emit(const char *workload, const char *unit, double value,
		 const char *extra)
{
	printf("{\"system\":\"%s\",\"workload\":\"%s\",\"unit\":\"%s\","
	       "\"value\":%.6g,\"nfs_version\":%d%s%s}\n",
	       sys_label, workload, unit, value, nfs_version,
	       extra && *extra ? "," : "", extra ? extra : "");
	fflush(stdout);
}

/* write exactly len bytes at the current offset */
static void write_all(struct nfsfh *fh, const char *buf, uint64_t len,
		      const char *path)
{
	uint64_t done = 0;
	while (done < len) {
		int r = nfs_write(nfs, fh, len - done, buf + done);
		if (r <= 0)
			die_nfs("nfs_write", path, r);
		done += (uint64_t)r;
	}
}

/* read up to len bytes at the current offset; returns bytes read (< len at EOF) */
static uint64_t read_full(struct nfsfh *fh, char *buf, uint64_t len,
			  const char *path)
{
	uint64_t done = 0;
	while (done < len) {
		int r = nfs_read(nfs, fh, len - done, buf + done);
		if (r < 0)
			die_nfs("nfs_read", path, r);
		if (r == 0)
			break;
		done += (uint64_t)r;
	}
	return done;
}

static void nfs_mkdir_checked(const char *path)
{
	int r = nfs_mkdir(nfs, path);
	if (r < 0)
		die_nfs("nfs_mkdir", path, r);
}

static void nfs_rmdir_checked(const char *path)
{
	int r = nfs_rmdir(nfs, path);
	if (r < 0)
		die_nfs("nfs_rmdir", path, r);
}

static void nfs_unlink_checked(const char *path)
{
	int r = nfs_unlink(nfs, path);
	if (r < 0)
		die_nfs("nfs_unlink", path, r);
}

static struct nfsfh *create_wronly(const char *path)
{
	struct nfsfh *fh = NULL;
	/* nfs_creat() opens read-only, which NFSv4 WRITE rejects
	 * (NFS4ERR_OPENMODE); nfs_create() takes the open flags. */
	int r = nfs_create(nfs, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &fh);
	if (r < 0 || !fh)
		die_nfs("nfs_create", path, r);
	return fh;
}

static struct nfsfh *open_rdonly(const char *path)
{
	struct nfsfh *fh = NULL;
	int r = nfs_open(nfs, path, O_RDONLY, &fh);
	if (r < 0 || !fh)
		die_nfs("nfs_open", path, r);
	return fh;
}

static void close_checked(struct nfsfh *fh, const char *path)
{
	int r = nfs_close(nfs, fh);
	if (r < 0)
		die_nfs("nfs_close", path, r);
}

static void fill_pattern(char *buf, uint64_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (uint64_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (char)(x & 0xff);
	}
}

/* file i's content: the shared pattern with i stamped in its first 8 bytes */
static void stamp(char *buf, uint64_t len, uint64_t i)
{
	for (int b = 0; b < 8 && (uint64_t)b < len; b++)
		buf[b] = (char)((i >> (8 * b)) & 0xff);
}

static void file_path(char *out, size_t cap, const char *base, long i, long dirs)
{
	snprintf(out, cap, "%s/d%03ld/f%06ld", base, i % dirs, i);
}

static void run_small(const char *base, long n, long size, long dirs)
{
	char path[4096], extra[256];
	char *buf = xmalloc((size_t)size), *rbuf = xmalloc((size_t)size + 1);
	fill_pattern(buf, (uint64_t)size, 42);
	snprintf(extra, sizeof extra, "\"files\":%ld,\"size\":%ld,\"dirs\":%ld",
		 n, size, dirs);

	for (long d = 0; d < dirs; d++) {
		snprintf(path, sizeof path, "%s/d%03ld", base, d);
		nfs_mkdir_checked(path);
	}

	double t0 = now();
	for (long i = 0; i < n; i++) {
		file_path(path, sizeof path, base, i, dirs);
		struct nfsfh *fh = create_wronly(path);
		stamp(buf, (uint64_t)size, (uint64_t)i);
		write_all(fh, buf, (uint64_t)size, path);
		close_checked(fh, path);
	}
	double t1 = now();
	emit("create", "files/s", n / (t1 - t0), extra);

	t0 = now();
	for (long i = 0; i < n; i++) {
		struct nfs_stat_64 st;
		file_path(path, sizeof path, base, i, dirs);
		int r = nfs_stat64(nfs, path, &st);
		if (r < 0)
			die_nfs("nfs_stat64", path, r);
		if (st.nfs_size != (uint64_t)size) {
			fprintf(stderr, "nfsbench: %s has size %" PRIu64 ", expected %ld\n",
				path, (uint64_t)st.nfs_size, size);
			exit(1);
		}
	}
	t1 = now();
	emit("stat", "files/s", n / (t1 - t0), extra);

	t0 = now();
	for (long i = 0; i < n; i++) {
		file_path(path, sizeof path, base, i, dirs);
		struct nfsfh *fh = open_rdonly(path);
		/* ask for one byte more than the size, to see EOF in the same call */
		uint64_t got = read_full(fh, rbuf, (uint64_t)size + 1, path);
		close_checked(fh, path);
		stamp(buf, (uint64_t)size, (uint64_t)i);
		if (got != (uint64_t)size || memcmp(buf, rbuf, (size_t)size) != 0) {
			fprintf(stderr, "nfsbench: %s: content differs from what was written (%" PRIu64 " bytes read)\n",
				path, got);
			exit(1);
		}
	}
	t1 = now();
	emit("read", "files/s", n / (t1 - t0), extra);

	t0 = now();
	for (long i = 0; i < n; i++) {
		file_path(path, sizeof path, base, i, dirs);
		nfs_unlink_checked(path);
	}
	t1 = now();
	emit("delete", "files/s", n / (t1 - t0), extra);

	for (long d = 0; d < dirs; d++) {
		snprintf(path, sizeof path, "%s/d%03ld", base, d);
		nfs_rmdir_checked(path);
	}
	free(buf);
	free(rbuf);
}

#define CHUNK (1024 * 1024)

static void write_seq_file(const char *path, long mib, int report)
{
	char *buf = xmalloc(CHUNK);
	char extra[128];
	fill_pattern(buf, CHUNK, 7);
	double t0 = now();
	struct nfsfh *fh = create_wronly(path);
	for (long i = 0; i < mib; i++) {
		stamp(buf, CHUNK, (uint64_t)i);
		write_all(fh, buf, CHUNK, path);
	}
	close_checked(fh, path);
	double t1 = now();
	if (report) {
		snprintf(extra, sizeof extra, "\"mib\":%ld,\"seconds\":%.6f,\"wsize\":%" PRIu64,
			 mib, t1 - t0, (uint64_t)nfs_get_writemax(nfs));
		emit("seq_write", "GB/s", (double)mib * CHUNK / 1e9 / (t1 - t0), extra);
	}
	free(buf);
}

static void read_seq_file(const char *path, long mib)
{
	char *buf = xmalloc(CHUNK), *want = xmalloc(CHUNK);
	char extra[128];
	fill_pattern(want, CHUNK, 7);
	uint64_t total = 0;
	double t0 = now();
	struct nfsfh *fh = open_rdonly(path);
	for (;;) {
		uint64_t got = read_full(fh, buf, CHUNK, path);
		if (got == 0)
			break;
		/* spot check: the stamp of every 1 MiB block */
		if (got >= 8) {
			stamp(want, CHUNK, total / CHUNK);
			if (memcmp(buf, want, 8) != 0) {
				fprintf(stderr, "nfsbench: %s: wrong data at offset %" PRIu64 "\n",
					path, total);
				exit(1);
			}
		}
		total += got;
		if (got < CHUNK)
			break;
	}
	close_checked(fh, path);
	double t1 = now();
	if (total != (uint64_t)mib * CHUNK) {
		fprintf(stderr, "nfsbench: %s: read %" PRIu64 " bytes, expected %" PRIu64 "\n",
			path, total, (uint64_t)mib * CHUNK);
		exit(1);
	}
	snprintf(extra, sizeof extra, "\"mib\":%ld,\"seconds\":%.6f,\"rsize\":%" PRIu64,
		 mib, t1 - t0, (uint64_t)nfs_get_readmax(nfs));
	emit("seq_read", "GB/s", (double)total / 1e9 / (t1 - t0), extra);
	free(buf);
	free(want);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, long n, double p)
{
	long idx = (long)(p * (double)(n - 1) + 0.5);
	if (idx < 0)
		idx = 0;
	if (idx >= n)
		idx = n - 1;
	return sorted[idx];
}

static void run_rand(const char *path, long mib, long reads, unsigned seed)
{
	const uint64_t bs = 4096;
	uint64_t blocks = (uint64_t)mib * CHUNK / bs;
	char buf[4096], extra[160];
	double *lat = xmalloc(sizeof(double) * (size_t)reads);
	srandom(seed);
	struct nfsfh *fh = open_rdonly(path);
	double t0 = now();
	for (long i = 0; i < reads; i++) {
		uint64_t blk = (((uint64_t)random() << 31) ^ (uint64_t)random()) % blocks;
		double a = now();
		int r = nfs_pread(nfs, fh, blk * bs, bs, buf);
		double b = now();
		if (r != (int)bs)
			die_nfs("nfs_pread", path, r < 0 ? r : -EIO);
		lat[i] = (b - a) * 1e6;
	}
	double t1 = now();
	close_checked(fh, path);
	qsort(lat, (size_t)reads, sizeof(double), cmp_double);
	double p50 = percentile(lat, reads, 0.50), p99 = percentile(lat, reads, 0.99);
	snprintf(extra, sizeof extra,
		 "\"reads\":%ld,\"file_mib\":%ld,\"p50_us\":%.1f,\"p99_us\":%.1f",
		 reads, mib, p50, p99);
	emit("rand_read_4k", "reads/s", reads / (t1 - t0), extra);
	snprintf(extra, sizeof extra, "\"reads\":%ld,\"file_mib\":%ld", reads, mib);
	emit("rand_read_4k_p50", "us", p50, extra);
	emit("rand_read_4k_p99", "us", p99, extra);
	free(lat);
}

/*
 * tree: a local directory tree written to NFS file by file, read back, removed.
 */

struct tree_file {
	char *rel;     /* path relative to SRCDIR */
	char *data;
	uint64_t size;
};

static struct {
	size_t rootlen;        /* strlen(SRCDIR) after trailing slashes are dropped */
	char **dirs;           /* relative paths, SRCDIR itself excluded */
	long ndirs, capdirs;
	struct tree_file *files;
	long nfiles, capfiles;
	uint64_t bytes, largest;
} tree;

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		fprintf(stderr, "nfsbench: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return q;
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d) {
		fprintf(stderr, "nfsbench: out of memory\n");
		exit(1);
	}
	return d;
}

/* reads the whole local file path of size bytes (as fstat reported) */
static char *load_local(const char *path, uint64_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "nfsbench: open(%s): %s\n", path, strerror(errno));
		exit(1);
	}
	char *buf = xmalloc((size_t)size);
	uint64_t done = 0;
	while (done < size) {
		ssize_t r = read(fd, buf + done, (size_t)(size - done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "nfsbench: read(%s): %s\n", path, strerror(errno));
			exit(1);
		}
		if (r == 0) {
			fprintf(stderr, "nfsbench: %s: shorter than its size %" PRIu64
				" (changed while loading?)\n", path, size);
			exit(1);
		}
		done += (uint64_t)r;
	}
	close(fd);
	return buf;
}

static int tree_visit(const char *fpath, const struct stat *sb, int type,
		      struct FTW *ftw)
{
	if (ftw->level == 0) {
		if (type != FTW_D)
			die("-t %s: not a directory", fpath);
		return 0;
	}
	const char *rel = fpath + tree.rootlen + 1;
	switch (type) {
	case FTW_D:
		if (tree.ndirs == tree.capdirs) {
			tree.capdirs = tree.capdirs ? 2 * tree.capdirs : 64;
			tree.dirs = xrealloc(tree.dirs, sizeof(char *) * (size_t)tree.capdirs);
		}
		tree.dirs[tree.ndirs++] = xstrdup(rel);
		return 0;
	case FTW_F:
		if (!S_ISREG(sb->st_mode))
			die("%s: only directories and regular files are supported", fpath);
		if (tree.nfiles == tree.capfiles) {
			tree.capfiles = tree.capfiles ? 2 * tree.capfiles : 1024;
			tree.files = xrealloc(tree.files,
					      sizeof(struct tree_file) * (size_t)tree.capfiles);
		}
		struct tree_file *f = &tree.files[tree.nfiles++];
		f->rel = xstrdup(rel);
		f->size = (uint64_t)sb->st_size;
		f->data = load_local(fpath, f->size);
		tree.bytes += f->size;
		if (f->size > tree.largest)
			tree.largest = f->size;
		return 0;
	case FTW_DNR:
		die("%s: directory cannot be read", fpath);
		return 1;
	case FTW_NS:
		die("%s: cannot stat", fpath);
		return 1;
	default: /* FTW_SL, FTW_SLN (FTW_PHYS: symlinks are not followed) */
		die("%s: only directories and regular files are supported", fpath);
		return 1;
	}
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* files under 1 MiB first, then the larger ones; each group in path order */
static int cmp_tree_file(const void *a, const void *b)
{
	const struct tree_file *x = a, *y = b;
	int lx = x->size >= CHUNK, ly = y->size >= CHUNK;
	if (lx != ly)
		return lx - ly;
	return strcmp(x->rel, y->rel);
}

static void load_tree(const char *src)
{
	char root[4096];
	if (snprintf(root, sizeof root, "%s", src) >= (int)sizeof root)
		die("-t %s: path too long", src);
	size_t len = strlen(root);
	while (len > 1 && root[len - 1] == '/')
		root[--len] = '\0';
	tree.rootlen = len;
	if (nftw(root, tree_visit, 32, FTW_PHYS) != 0) {
		fprintf(stderr, "nfsbench: nftw(%s): %s\n", root, strerror(errno));
		exit(1);
	}
	if (tree.nfiles == 0)
		die("-t %s: no files in it", src);
	/* a directory's path is a prefix of its children's, so this is parents first */
	qsort(tree.dirs, (size_t)tree.ndirs, sizeof(char *), cmp_str);
	qsort(tree.files, (size_t)tree.nfiles, sizeof(struct tree_file), cmp_tree_file);
}

/* reads up to len bytes in calls of at most 1 MiB; returns bytes read (< len at EOF) */
static uint64_t read_upto(struct nfsfh *fh, char *buf, uint64_t len, const char *path)
{
	uint64_t done = 0;
	while (done < len) {
		uint64_t want = len - done < CHUNK ? len - done : CHUNK;
		uint64_t got = read_full(fh, buf + done, want, path);
		done += got;
		if (got < want)
			break;
	}
	return done;
}

/* writes, reads back and (unless keep) removes the tree load_tree() loaded */
static void run_tree(const char *base, int keep)
{
	char path[8192], extra[256];
	snprintf(extra, sizeof extra,
		 "\"files\":%ld,\"dirs\":%ld,\"bytes\":%" PRIu64 ",\"order\":\"under 1 MiB first, then larger; path order\"",
		 tree.nfiles, tree.ndirs, tree.bytes);

	double t0 = now();
	for (long d = 0; d < tree.ndirs; d++) {
		snprintf(path, sizeof path, "%s/%s", base, tree.dirs[d]);
		nfs_mkdir_checked(path);
	}
	for (long i = 0; i < tree.nfiles; i++) {
		const struct tree_file *f = &tree.files[i];
		snprintf(path, sizeof path, "%s/%s", base, f->rel);
		struct nfsfh *fh = create_wronly(path);
		for (uint64_t off = 0; off < f->size; off += CHUNK) {
			uint64_t n = f->size - off < CHUNK ? f->size - off : CHUNK;
			write_all(fh, f->data + off, n, path);
		}
		close_checked(fh, path);
	}
	double t1 = now();
	emit("tree_write", "s", t1 - t0, extra);

	/* one byte more than the largest file, to see EOF in the same loop */
	char *rbuf = xmalloc((size_t)tree.largest + 1);
	t0 = now();
	for (long i = 0; i < tree.nfiles; i++) {
		const struct tree_file *f = &tree.files[i];
		snprintf(path, sizeof path, "%s/%s", base, f->rel);
		struct nfsfh *fh = open_rdonly(path);
		uint64_t got = read_upto(fh, rbuf, f->size + 1, path);
		close_checked(fh, path);
		if (got != f->size || memcmp(rbuf, f->data, (size_t)f->size) != 0) {
			fprintf(stderr, "nfsbench: %s: content differs from what was written (%" PRIu64
				" bytes read, %" PRIu64 " written)\n", path, got, f->size);
			exit(1);
		}
	}
	t1 = now();
	emit("tree_read", "s", t1 - t0, extra);
	free(rbuf);

	if (!keep) {
		t0 = now();
		for (long i = 0; i < tree.nfiles; i++) {
			snprintf(path, sizeof path, "%s/%s", base, tree.files[i].rel);
			nfs_unlink_checked(path);
		}
		for (long d = tree.ndirs - 1; d >= 0; d--) {
			snprintf(path, sizeof path, "%s/%s", base, tree.dirs[d]);
			nfs_rmdir_checked(path);
		}
		t1 = now();
		emit("tree_remove", "s", t1 - t0, extra);
	}
	for (long i = 0; i < tree.nfiles; i++) {
		free(tree.files[i].rel);
		free(tree.files[i].data);
	}
	for (long d = 0; d < tree.ndirs; d++)
		free(tree.dirs[d]);
	free(tree.files);
	free(tree.dirs);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: nfsbench -u nfs://HOST/EXPORT[?libnfs-args] [options]\n"
		"  -u URL       export to mount (libnfs URL; e.g. nfs://127.0.0.1/srv/x)\n"
		"  -V 3|4       NFS version (default 3; a version= URL argument wins; libnfs\n"
		"               4.0.0 cannot write more than ~3.8 KB per call over v4)\n"
		"  -w LIST      workloads: small,seq,rand,tree or all (default all:\n"
		"               small,seq,rand)\n"
		"  -n N         small files: number of files (default 2000)\n"
		"  -s BYTES     small files: size of each (default 4096)\n"
		"  -d D         small files: number of directories (default 20)\n"
		"  -m MIB       seq/rand: file size in MiB (default 256)\n"
		"  -r R         rand: number of 4 KiB reads (default 20000)\n"
		"  -t SRCDIR    tree: the local directory tree to copy to NFS\n"
		"  -p NAME      work directory inside the export (default nfsbench.PID)\n"
		"  -S LABEL     value of \"system\" in the output (default \"%s\")\n"
		"  -k           keep the work directory and the tree (default: remove)\n"
		"  -h           this help\n",
		sys_label);
}

static long parse_pos(const char *s, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v <= 0)
		die("bad %s (want a positive integer)", what);
	return v;
}

int main(int argc, char **argv)
{
	const char *url_s = NULL, *wl = "all", *prefix = NULL, *tree_src = NULL;
	long n = 2000, size = 4096, dirs = 20, mib = 256, reads = 20000;
	int keep = 0, c;
	char prefix_buf[64], base[1024], seqpath[1100];

	while ((c = getopt(argc, argv, "u:V:w:n:s:d:m:r:t:p:S:kh")) != -1) {
		switch (c) {
		case 'u': url_s = optarg; break;
		case 'V': nfs_version = (int)parse_pos(optarg, "-V"); break;
		case 'w': wl = optarg; break;
		case 'n': n = parse_pos(optarg, "-n"); break;
		case 's': size = parse_pos(optarg, "-s"); break;
		case 'd': dirs = parse_pos(optarg, "-d"); break;
		case 'm': mib = parse_pos(optarg, "-m"); break;
		case 'r': reads = parse_pos(optarg, "-r"); break;
		case 't': tree_src = optarg; break;
		case 'p': prefix = optarg; break;
		case 'S': sys_label = optarg; break;
		case 'k': keep = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!url_s || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (nfs_version != 3 && nfs_version != 4)
		die("-V %s: only 3 and 4 are supported", "");
	int do_small = 0, do_seq = 0, do_rand = 0, do_tree = 0;
	{
		char *list = xstrdup(wl), *save = NULL;
		for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (!strcmp(t, "all"))
				do_small = do_seq = do_rand = 1;
			else if (!strcmp(t, "small"))
				do_small = 1;
			else if (!strcmp(t, "seq"))
				do_seq = 1;
			else if (!strcmp(t, "rand"))
				do_rand = 1;
			else if (!strcmp(t, "tree"))
				do_tree = 1;
			else
				die("unknown workload '%s' (want small, seq, rand, tree or all)", t);
		}
		free(list);
	}
	if (do_tree && !tree_src)
		die("-w tree needs -t SRCDIR%s", "");
	if (tree_src && !do_tree)
		die("-t %s is only used by -w tree", tree_src);
	if (!prefix) {
		snprintf(prefix_buf, sizeof prefix_buf, "nfsbench.%d", (int)getpid());
		prefix = prefix_buf;
	}
	if (strchr(prefix, '/'))
		die("-p %s: must be a single name", prefix);

	/* before anything is created on the server: a bad SRCDIR leaves nothing behind */
	if (do_tree)
		load_tree(tree_src);

	nfs = nfs_init_context();
	if (!nfs)
		die("nfs_init_context failed%s", "");
	nfs_set_timeout(nfs, 60000); /* never hang forever on a dead server */
	int r = nfs_set_version(nfs, nfs_version == 4 ? NFS_V4 : NFS_V3);
	if (r < 0)
		die_nfs("nfs_set_version", "", r);
	struct nfs_url *url = nfs_parse_url_dir(nfs, url_s);
	if (!url)
		die_nfs("nfs_parse_url_dir", url_s, -EINVAL);
	if (!url->server || !url->path)
		die("%s: want nfs://HOST/EXPORT", url_s);
	r = nfs_mount(nfs, url->server, url->path);
	if (r < 0)
		die_nfs("nfs_mount", url_s, r);

	snprintf(base, sizeof base, "/%s", prefix);
	snprintf(seqpath, sizeof seqpath, "%s/seq.dat", base);
	nfs_mkdir_checked(base);

	if (do_small)
		run_small(base, n, size, dirs);
	if (do_seq) {
		write_seq_file(seqpath, mib, 1);
		read_seq_file(seqpath, mib);
	}
	if (do_rand) {
		if (!do_seq)
			write_seq_file(seqpath, mib, 0);
		run_rand(seqpath, mib, reads, 12345);
	}
	if (do_tree)
		run_tree(base, keep);
	if (!keep) {
		if (do_seq || do_rand)
			nfs_unlink_checked(seqpath);
		nfs_rmdir_checked(base);
	}
	r = nfs_umount(nfs);
	if (r < 0)
		die_nfs("nfs_umount", url_s, r);
	nfs_destroy_url(url);
	nfs_destroy_context(nfs);
	return 0;
}
