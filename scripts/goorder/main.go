// Command goorder writes the task order and node tie order the FGD paper's simulator derives from a seed with Go's
// math/rand (docs/fgd-simulator-protocol.md §2 steps 2–6), so that the numpy reference can replay them exactly:
// one "T <name>" line per task in arrival order (clones named <orig>-tuned-<k>), then one "N <node> <prefix>" line
// per node. Written from the protocol document for the decision-level comparison of docs/simulator.md.
//
//	go run ./scripts/goorder -tasks data/alibaba-gpu-v2023/openb_pod_list_default.csv -seed 42 > order.txt
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
)

type pod struct {
	name       string
	milli, num int64
}

func readCSV(path string) []map[string]string {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		panic(err)
	}
	out := []map[string]string{}
	for _, row := range rows[1:] {
		m := map[string]string{}
		for i, h := range rows[0] {
			if i < len(row) {
				m[h] = row[i]
			}
		}
		out = append(out, m)
	}
	return out
}

func main() {
	tasks := flag.String("tasks", "", "task CSV")
	nodes := flag.String("nodes", "data/alibaba-gpu-v2023/openb_node_list_gpu_node.csv", "node CSV")
	seed := flag.Int64("seed", 42, "tune seed")
	skip := flag.Int("skip", 1, "rand.Int() calls consumed before the shuffle (the protocol: 1)")
	permSkip := flag.Int("permskip", 0, "draws consumed between tuning and rand.Perm (an experiment: informer start-up)")
	flag.Parse()
	var pods []pod
	for _, row := range readCSV(*tasks) {
		num, _ := strconv.ParseInt(row["num_gpu"], 10, 64)
		milli, _ := strconv.ParseInt(row["gpu_milli"], 10, 64)
		if num == 0 {
			milli = 0
		} else if milli > 1000 {
			milli = 1000
		}
		pods = append(pods, pod{row["name"], milli, num})
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].name < pods[j].name })
	orig := append([]pod(nil), pods...)
	r := rand.New(rand.NewSource(*seed)) // the global source as rand.Seed(seed) set it (Seed is a no-op since Go 1.24)
	for i := 0; i < *skip; i++ {
		r.Int()
	}
	r.Shuffle(len(pods), func(i, j int) { pods[i], pods[j] = pods[j], pods[i] })
	var capacity int64
	nodeRows := readCSV(*nodes)
	for _, row := range nodeRows {
		g, _ := strconv.ParseInt(row["gpu"], 10, 64)
		capacity += g * 1000
	}
	target := int64(1.3 * float64(capacity))
	var total int64
	for _, p := range pods {
		total += p.milli * p.num
	}
	if total < target {
		for k := 0; ; k++ {
			c := orig[r.Intn(len(orig))]
			if total+c.milli > target {
				break
			}
			total += c.milli * c.num
			pods = append(pods, pod{fmt.Sprintf("%s-tuned-%d", c.name, k), c.milli, c.num})
		}
	} else {
		for total > target && len(pods) > 0 {
			i := r.Intn(len(pods))
			total -= pods[i].milli * pods[i].num
			pods = append(pods[:i], pods[i+1:]...)
		}
	}
	for _, p := range pods {
		fmt.Println("T", p.name)
	}
	names := []string{}
	for _, row := range nodeRows {
		names = append(names, row["sn"])
	}
	sort.Strings(names)
	for i := 0; i < *permSkip; i++ {
		r.Int63()
	}
	perm := r.Perm(len(names))
	for i, n := range names {
		fmt.Println("N", n, perm[i])
	}
}
