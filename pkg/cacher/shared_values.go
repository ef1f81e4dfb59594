package cacher

import (
	"hash/maphash"
	"reflect"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

// ShareValues wraps a storage decorator so that the objects a watch cache
// takes in share the values they have in common with the objects already
// in it, instead of each holding its own copy: the labels, owner
// references and managed fields of one ReplicaSet's pods, their
// containers' resources, environment, ports and probes, their volumes'
// sources and tolerations, and every repeated string (namespaces, images,
// node names, condition types). A pod decoded from etcd takes several
// times its serialized size in memory and upstream's watch cache holds
// every object decoded; most of a pod is what its siblings hold too.
//
// Sharing is safe because the watch cache's objects are already immutable
// and shared (every GET, LIST and watch of the cache reads the same
// object; writes deep-copy it first), and invisible: a shared value is
// equal (reflect.DeepEqual) to the one it replaces, so every response
// serializes to the same bytes.
//
// It happens in the attribute function the watch cache calls on every
// object it takes in (its initial list and every watch event), before
// anyone else sees the object: those objects are decoded for the watch
// cache alone. Sharing at decoding would be wrong: the update paths decode
// the current object from etcd and change it (a binding sets the pod's
// labels), which must never reach a value other objects hold.
func ShareValues(decorate generic.StorageDecorator) generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(obj runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers,
	) (storage.Interface, factory.DestroyFunc, error) {
		s := NewValueSharer(config.GroupResource)
		return decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, s.attrsSharing(getAttrs), triggers, indexers)
	}
}

// sharedFields name the fields whose values objects of one kind commonly
// have in common: what a pod's template gives all its replicas, what the
// nodes of one machine type report. A value is shared whole, by the field
// that holds it; every other field is walked into, its strings interned.
var sharedFields = map[string]bool{
	// Object metadata; FieldsV1 is a managed-fields entry's set.
	"Labels": true, "Annotations": true, "OwnerReferences": true, "FieldsV1": true,
	// Pod spec and containers.
	"NodeSelector": true, "Affinity": true, "Tolerations": true, "TopologySpreadConstraints": true,
	"DNSConfig": true, "ReadinessGates": true, "VolumeSource": true,
	"Command": true, "Args": true, "Env": true, "EnvFrom": true, "Ports": true, "Resources": true,
	"LivenessProbe": true, "ReadinessProbe": true, "StartupProbe": true, "Lifecycle": true, "SecurityContext": true,
	// Pod and node status.
	"HostIPs": true, "Images": true, "Capacity": true, "Allocatable": true, "Taints": true,
}

// uniqueStrings name the string fields whose values are each object's own
// (interning them would only cost), as struct type.field or any type's
// field.
var uniqueStrings = map[string]bool{
	"ObjectMeta.Name": true, "UID": true, "ResourceVersion": true, "SelfLink": true,
	"PodIP": true, "PodIP.IP": true, "ContainerID": true, "Message": true,
}

// maxInternedLength is the longest string interned: longer ones (messages,
// payloads) rarely repeat.
const maxInternedLength = 256

// maxInternedStrings bounds each resource's table of interned strings: the
// table is emptied when it is full (its strings stay shared by the objects
// that hold them).
const maxInternedStrings = 1 << 18

// maxTableValues bounds each table of shared values: the table is emptied
// when it is full. What it held stays shared by the objects that hold it;
// values met later are shared from then on. It bounds what a table keeps
// of objects the cache no longer holds.
const maxTableValues = 1 << 16

// ValueSharer makes the objects it is given share the values they have
// in common (ShareValues). Its tables are of one resource's objects.
type ValueSharer struct {
	mu       sync.Mutex
	resource schema.GroupResource
	tables   map[reflect.Type]*valueTable
	strings  *internTable
	shared   int // counted until the end of one object
	own      int
}

// NewValueSharer returns a sharer for the objects of resource. The sharers
// of one resource (the watch cache's, an informer's) intern its strings
// together.
func NewValueSharer(resource schema.GroupResource) *ValueSharer {
	strings, _ := internTables.LoadOrStore(resource, &internTable{})
	return &ValueSharer{resource: resource, tables: map[reflect.Type]*valueTable{}, strings: strings.(*internTable)}
}

// internTables are each resource's interned strings.
var internTables sync.Map // schema.GroupResource → *internTable

// internTable holds one copy of each string it is given.
type internTable struct {
	mu      sync.Mutex
	strings map[string]string
}

func (t *internTable) intern(s string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if interned, ok := t.strings[s]; ok {
		return interned
	}
	if t.strings == nil || len(t.strings) >= maxInternedStrings {
		t.strings = map[string]string{}
	}
	t.strings[s] = s
	return s
}

// attrsSharing returns getAttrs, sharing the object's values first.
func (s *ValueSharer) attrsSharing(getAttrs storage.AttrFunc) storage.AttrFunc {
	return func(obj runtime.Object) (labels.Set, fields.Set, error) {
		s.Share(obj)
		return getAttrs(obj)
	}
}

// Share replaces the values of obj, which no one else holds yet, by equal
// values other objects hold.
func (s *ValueSharer) Share(obj runtime.Object) {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shared, s.own = 0, 0
	s.walk(v.Elem())
	if s.shared > 0 {
		sharedValues.WithLabelValues(s.resource.Group, s.resource.Resource, "shared").Add(float64(s.shared))
	}
	if s.own > 0 {
		sharedValues.WithLabelValues(s.resource.Group, s.resource.Resource, "own").Add(float64(s.own))
	}
}

// walk interns the strings of the settable value v and shares the values
// of its shared fields.
func (s *ValueSharer) walk(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if n := v.Len(); n > 0 && n <= maxInternedLength {
			v.SetString(s.strings.intern(v.String()))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			s.walk(v.Elem())
		}
	case reflect.Slice:
		if v.Type() == bytesType {
			return
		}
		for i := range v.Len() {
			s.walk(v.Index(i))
		}
	case reflect.Struct:
		for _, f := range planFor(v.Type()) {
			switch field := v.Field(f.index); {
			case f.shared:
				s.share(field)
			case !f.unique:
				s.walk(field)
			}
		}
	}
}

// share replaces the settable value v by an equal shared one, or interns
// its strings: then it may become the shared one.
func (s *ValueSharer) share(v reflect.Value) {
	switch v.Kind() {
	case reflect.Map, reflect.Slice, reflect.Pointer:
		if v.IsNil() {
			return
		}
	}
	t := s.tables[v.Type()]
	if t == nil {
		t = &valueTable{}
		s.tables[v.Type()] = t
	}
	var h maphash.Hash
	h.SetSeed(hashSeed)
	hashValue(&h, v)
	key := h.Sum64()
	if c, ok := t.lookup(key, v); ok {
		v.Set(c)
		s.shared++
		return
	}
	s.walk(v) // before anyone else may hold it
	t.remember(key, v)
	s.own++
}

// valueTable holds the shared values of one type by a hash of their
// contents. A value becomes shared when a second object holds an equal
// one: values that no other object holds (a pod's IP) are never kept.
type valueTable struct {
	seen   map[uint64]struct{}
	values map[uint64][]reflect.Value
}

// lookup returns the shared value equal to v, whose hash is key.
func (t *valueTable) lookup(key uint64, v reflect.Value) (reflect.Value, bool) {
	for _, c := range t.values[key] {
		if equalValues(c, v) {
			return c, true
		}
	}
	return reflect.Value{}, false
}

// remember makes v shared the second time its contents are met.
func (t *valueTable) remember(key uint64, v reflect.Value) {
	if _, ok := t.seen[key]; !ok {
		if t.seen == nil || len(t.seen) >= maxTableValues {
			t.seen = map[uint64]struct{}{}
		}
		t.seen[key] = struct{}{}
		return
	}
	if t.values == nil || len(t.values) >= maxTableValues {
		t.values = map[uint64][]reflect.Value{}
	}
	c := reflect.New(v.Type()).Elem()
	c.Set(v)
	t.values[key] = append(t.values[key], c)
}

// fieldStep is what walk does with one field of a struct: share its value
// or not, intern its strings or not.
type fieldStep struct {
	index          int
	shared, unique bool
}

var (
	plans        sync.Map // reflect.Type → []fieldStep
	bytesType    = reflect.TypeFor[[]byte]()
	locationType = reflect.TypeFor[*time.Location]()
	hashSeed     = maphash.MakeSeed()
)

// planFor returns the fields of struct type t that walk visits: the
// exported ones that hold strings or shared values.
func planFor(t reflect.Type) []fieldStep {
	if p, ok := plans.Load(t); ok {
		return p.([]fieldStep)
	}
	var steps []fieldStep
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		shared := sharedFields[f.Name] && f.Type.Kind() != reflect.String
		unique := uniqueStrings[f.Name] || uniqueStrings[t.Name()+"."+f.Name]
		if shared || !unique && holdsStrings(f.Type, map[reflect.Type]bool{}) {
			steps = append(steps, fieldStep{index: i, shared: shared, unique: unique})
		}
	}
	plans.Store(t, steps)
	return steps
}

// holdsStrings tells whether walk finds strings to intern in a t.
func holdsStrings(t reflect.Type, visiting map[reflect.Type]bool) bool {
	switch t.Kind() {
	case reflect.String:
		return true
	case reflect.Pointer, reflect.Slice:
		return t != bytesType && holdsStrings(t.Elem(), visiting)
	case reflect.Struct:
		if visiting[t] {
			return false // its first visit answers
		}
		visiting[t] = true
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && (sharedFields[f.Name] || holdsStrings(f.Type, visiting)) {
				return true
			}
		}
	}
	return false
}

// hashValue writes v's contents into h: equal values (equalValues) hash
// alike.
func hashValue(h *maphash.Hash, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		h.WriteString(v.String())
		h.WriteByte(0)
	case reflect.Bool:
		h.WriteByte(boolByte(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		maphash.WriteComparable(h, v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		maphash.WriteComparable(h, v.Uint())
	case reflect.Float32, reflect.Float64:
		maphash.WriteComparable(h, v.Float())
	case reflect.Slice:
		maphash.WriteComparable(h, v.Len())
		if v.Type().Elem().Kind() == reflect.Uint8 {
			h.Write(v.Bytes())
			return
		}
		for i := range v.Len() {
			hashValue(h, v.Index(i))
		}
	case reflect.Array:
		for i := range v.Len() {
			hashValue(h, v.Index(i))
		}
	case reflect.Map:
		// In any order: the sum of each entry's hash.
		var sum uint64
		key, value := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		for it := v.MapRange(); it.Next(); {
			key.SetIterKey(it)
			value.SetIterValue(it)
			var e maphash.Hash
			e.SetSeed(hashSeed)
			hashValue(&e, key)
			hashValue(&e, value)
			sum += e.Sum64()
		}
		maphash.WriteComparable(h, v.Len())
		maphash.WriteComparable(h, sum)
	case reflect.Pointer:
		h.WriteByte(boolByte(v.IsNil()))
		// A time's zone is compared by address (equalValues).
		if !v.IsNil() && v.Type() != locationType {
			hashValue(h, v.Elem())
		}
	case reflect.Interface:
		h.WriteByte(boolByte(v.IsNil()))
		if !v.IsNil() {
			h.WriteString(v.Elem().Type().String())
			hashValue(h, v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			hashValue(h, v.Field(i))
		}
	}
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// equalValues tells whether a and b, of one type, are equal as
// reflect.DeepEqual tells, or conservatively unequal: a time's zone
// compares by address, a float NaN is unequal. Equal values serialize to
// the same bytes.
func equalValues(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.String:
		return a.String() == b.String()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return a.Uint() == b.Uint()
	case reflect.Float32, reflect.Float64:
		return a.Float() == b.Float()
	case reflect.Slice:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		if a.UnsafePointer() == b.UnsafePointer() {
			return true
		}
		if a.Type().Elem().Kind() == reflect.Uint8 {
			return string(a.Bytes()) == string(b.Bytes())
		}
		for i := range a.Len() {
			if !equalValues(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Array:
		for i := range a.Len() {
			if !equalValues(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		if a.UnsafePointer() == b.UnsafePointer() {
			return true
		}
		key, value := reflect.New(a.Type().Key()).Elem(), reflect.New(a.Type().Elem()).Elem()
		for it := a.MapRange(); it.Next(); {
			key.SetIterKey(it)
			value.SetIterValue(it)
			bv := b.MapIndex(key)
			if !bv.IsValid() || !equalValues(value, bv) {
				return false
			}
		}
		return true
	case reflect.Pointer:
		if a.UnsafePointer() == b.UnsafePointer() {
			return true
		}
		if a.IsNil() || b.IsNil() || a.Type() == locationType {
			return false
		}
		return equalValues(a.Elem(), b.Elem())
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return a.Elem().Type() == b.Elem().Type() && equalValues(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !equalValues(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	}
	return false // channels and functions: not in API objects
}
