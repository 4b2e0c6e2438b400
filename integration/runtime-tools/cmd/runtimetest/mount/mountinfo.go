package mount

// Info reveals information about a particular mounted filesystem. This
// struct is populated from the content in the /proc/<pid>/mountinfo file.
// (Written locally: this file of upstream runtime-tools was not available.)
type Info struct {
	ID         int
	Parent     int
	Major      int
	Minor      int
	Root       string
	Mountpoint string
	Opts       string
	Optional   string
	Fstype     string
	Source     string
	VfsOpts    string
}
