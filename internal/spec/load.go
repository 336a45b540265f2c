package spec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds what Load reads: a DR spec is a few kilobytes, and a
// multi-megabyte file is a wrong path, not a spec.
const MaxFileSize = 4 << 20

// Load reads, decodes, defaults and checks the spec at path. Every problem
// is an *Error in the returned Errors; a spec with errors is never returned.
func Load(path string) (*Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("cannot read the spec: %v", errors.Unwrap(err))}}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("cannot read the spec: %v", err)}}
	}
	if len(data) > MaxFileSize {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("the file is larger than %d MiB; a DR spec is a small YAML document, is this the right file?", MaxFileSize>>20)}}
	}
	return Parse(path, data)
}

// Parse decodes, defaults and checks a spec held in memory; file names it in
// messages.
func Parse(file string, data []byte) (s *Spec, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, Errors{{File: file, Msg: fmt.Sprintf("not a readable YAML document (%v)", r)}}
		}
	}()
	if len(data) > MaxFileSize {
		return nil, Errors{{File: file, Msg: fmt.Sprintf("the document is larger than %d MiB", MaxFileSize>>20)}}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{yamlError(file, err)}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, Errors{{File: file, Line: 1, Column: 1, Msg: "the spec is empty; it starts with `version: 1`"}}
	}
	d := &decoder{file: file, pos: map[string]Pos{}}
	s = &Spec{File: file}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, Errors{{File: file, Line: top.Line, Column: top.Column, Msg: "the spec must be a YAML mapping that starts with `version: 1`"}}
	}
	d.decode(&root, reflect.ValueOf(s).Elem(), "")
	if len(d.errs) > 0 {
		return nil, d.errs.sorted()
	}
	s.pos = d.pos
	if errs := s.check(); len(errs) > 0 {
		return nil, errs.sorted()
	}
	s.fillDefaults()
	return s, nil
}

// PosOf returns where a field path stands in the file, if it was there.
func (s *Spec) PosOf(path string) (Pos, bool) {
	p, ok := s.pos[path]
	return p, ok
}

// Has reports whether the field path was written in the file.
func (s *Spec) Has(path string) bool {
	_, ok := s.pos[path]
	return ok
}

func yamlError(file string, err error) *Error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return &Error{File: file, Msg: fmt.Sprintf("not valid YAML: %v", te.Errors)}
	}
	e := &Error{File: file, Msg: "not valid YAML: " + err.Error()}
	var line int
	if _, scanErr := fmt.Sscanf(err.Error(), "yaml: line %d:", &line); scanErr == nil {
		e.Line, e.Column = line, 1
	}
	return e
}
