package elasticsearch

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// mappingsJSON is the mapping of every field a document can hold, with
// "dynamic": "strict": a field not listed here makes Elasticsearch reject
// the document (it goes to the dead-letter file) instead of guessing a type.
//
//go:embed mappings.json
var mappingsJSON []byte

// templateVersion is the index template's version. Bump it with every change
// to the template (TestTemplateVersion fails until you do): a sensor
// replaces an installed template only when its own version is higher, so
// that an old sensor never downgrades the mapping a newer one installed.
const templateVersion = 1

// templateBody is the composable index template for <prefix>-*. Its
// priority grows with the prefix length: two flowsensor templates whose
// patterns overlap (prefixes "flows" and "flows-lab") then never have equal
// priorities, which Elasticsearch refuses, and the longer prefix wins.
func templateBody(prefix, ilmPolicy string) []byte {
	settings := map[string]any{}
	if ilmPolicy != "" {
		settings["index.lifecycle.name"] = ilmPolicy
	}
	body, err := json.Marshal(map[string]any{
		"index_patterns": []string{prefix + "-*"},
		"priority":       100 + len(prefix),
		"version":        templateVersion,
		"_meta":          map[string]any{"managed_by": "flowsensor", "description": "flowsensor flow reports, ECS field names"},
		"template": map[string]any{
			"settings": settings,
			"mappings": json.RawMessage(mappingsJSON),
		},
	})
	if err != nil {
		panic(err) // static content
	}
	return body
}

// statusError is an HTTP answer other than 2xx.
type statusError struct {
	op     string
	status int
	body   string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s: %d %s: %s", e.op, e.status, http.StatusText(e.status), e.body)
}

// permanent reports whether err is an answer that retrying will not change:
// bad credentials, missing privileges, a template Elasticsearch refuses.
func permanent(err error) bool {
	var se *statusError
	return errors.As(err, &se) && se.status >= 400 && se.status < 500 && se.status != 408 && se.status != 429
}

// do runs req and returns the body of a 2xx answer, or a statusError.
func (s *Sink) do(ctx context.Context, op string, req esapi.Request) ([]byte, int, error) {
	res, err := req.Do(ctx, s.client)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, res.StatusCode, fmt.Errorf("%s: %w", op, err)
	}
	if res.IsError() {
		return body, res.StatusCode, &statusError{op: op, status: res.StatusCode, body: string(bytes.TrimSpace(body))}
	}
	return body, res.StatusCode, nil
}

// setup installs the ILM policy (when retention is set and the cluster has
// ILM) and the index template, unless a template of this or a newer version
// is there already. No document is sent before it succeeds: an index created
// without the template would get guessed types for good.
func (s *Sink) setup(ctx context.Context) error {
	name := s.cfg.IndexPrefix
	policy := ""
	if s.cfg.Retention > 0 {
		ok, err := s.hasILM(ctx)
		if err != nil {
			return err
		}
		if ok {
			body := `{"policy":{"_meta":{"managed_by":"flowsensor"},"phases":{"delete":{"min_age":"` +
				strconv.FormatInt(int64(s.cfg.Retention.Seconds()), 10) + `s","actions":{"delete":{}}}}}}`
			if _, _, err := s.do(ctx, "put ilm policy "+name, esapi.ILMPutLifecycleRequest{Policy: name, Body: bytes.NewReader([]byte(body))}); err != nil {
				return err
			}
			policy = name
		} else {
			s.log.Warn("elasticsearch: the cluster has no index lifecycle management (ILM); retention is not applied, delete old daily indices yourself",
				"indices", name+"-*")
		}
	}

	body, status, err := s.do(ctx, "get index template "+name, esapi.IndicesGetIndexTemplateRequest{Name: name})
	switch {
	case status == http.StatusNotFound:
	case err != nil:
		return err
	default:
		var got struct {
			IndexTemplates []struct {
				IndexTemplate struct {
					Version *int `json:"version"`
				} `json:"index_template"`
			} `json:"index_templates"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			return fmt.Errorf("get index template %s: %w", name, err)
		}
		if len(got.IndexTemplates) == 1 && got.IndexTemplates[0].IndexTemplate.Version != nil {
			v := *got.IndexTemplates[0].IndexTemplate.Version
			if v > templateVersion {
				s.log.Info("elasticsearch: a newer index template is installed; keeping it",
					"template", name, "installed_version", v, "version", templateVersion)
			}
			if v >= templateVersion {
				return nil
			}
		}
	}
	_, _, err = s.do(ctx, "put index template "+name, esapi.IndicesPutIndexTemplateRequest{
		Name: name, Body: bytes.NewReader(templateBody(name, policy)),
	})
	if err == nil {
		s.log.Info("elasticsearch: index template installed", "template", name, "version", templateVersion,
			"patterns", name+"-*", "ilm_policy", policy)
	}
	return err
}

// hasILM asks the cluster for its ILM status: distributions without the ILM
// module (the integ-test zip, OpenSearch) answer 4xx.
func (s *Sink) hasILM(ctx context.Context) (bool, error) {
	_, status, err := s.do(ctx, "get ilm status", esapi.ILMGetStatusRequest{})
	switch {
	case err == nil:
		return true, nil
	case status == http.StatusForbidden:
		s.log.Warn("elasticsearch: not allowed to read the ILM status (cluster privilege manage_ilm)", "error", err)
		return false, nil
	case status >= 400 && status < 500 && status != 401 && status != 408 && status != 429:
		return false, nil
	}
	return false, err
}
